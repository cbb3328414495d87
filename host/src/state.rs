//! The data each wasmtime `Store` carries, and the per-component recipe that builds it.

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::key_value::KeyValueAccess;
use crate::limits::{GuestMemory, MemoryPolicy};
use crate::manifest::DirMount;
use crate::variables::ComponentVariables;

/// Everything one component instance may reach.
pub struct HostState {
    pub wasi: WasiCtx,
    pub http: WasiHttpCtx,
    pub table: ResourceTable,
    pub key_value: KeyValueAccess,
    pub variables: ComponentVariables,
    pub memory: GuestMemory,
    hooks: NoOutboundHttp,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}

/// Components declare `allowed_outbound_hosts = []`, so every outgoing request is denied.
struct NoOutboundHttp;

impl WasiHttpHooks for NoOutboundHttp {
    fn send_request(
        &mut self,
        _request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<wasmtime_wasi_http::WasiBody>,
                        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

/// How to build a fresh [`HostState`] for one component (each instance gets its own).
#[derive(Clone)]
pub struct ComponentEnv {
    pub id: String,
    pub mounts: Vec<DirMount>,
    pub environment: Vec<(String, String)>,
    pub key_value: KeyValueAccess,
    pub variables: ComponentVariables,
    pub memory: MemoryPolicy,
}

impl ComponentEnv {
    pub fn new_state(&self) -> anyhow::Result<HostState> {
        let mut wasi = WasiCtxBuilder::new();
        wasi.inherit_stdout().inherit_stderr().envs(&self.environment);
        for mount in &self.mounts {
            wasi.preopened_dir(&mount.host, &mount.guest, FsPerms::ReadOnly)?;
        }
        Ok(HostState {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            key_value: self.key_value.clone(),
            variables: self.variables.clone(),
            memory: GuestMemory::new(self.memory),
            hooks: NoOutboundHttp,
        })
    }
}
