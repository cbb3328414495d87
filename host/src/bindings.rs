//! Generated bindings, one `bindgen!` per WIT world (WIT files under `host/wit/`).

/// Imports a Spin component may use beyond wasmtime-wasi's: key-value (`spin:key-value` and
/// `wasi:keyvalue`) and variables (host side).
pub mod spin {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "kana:host/spin-imports",
        imports: {
            // Building the stream and future can fail (a store error): a trap, not a guest error.
            "spin:key-value/key-value.[method]store.get-keys": async | store | trappable,
            // Synchronous WIT functions: with `store` they could not await the backend; plain
            // `async` holds the instance's state across the (short) store call instead.
            "wasi:keyvalue/store": async,
            "wasi:keyvalue/atomics": async,
            "wasi:keyvalue/batch": async,
            default: async | store,
        },
        with: {
            "spin:key-value/key-value.store": crate::key_value::OpenStore,
            "wasi:keyvalue/store.bucket": crate::key_value::OpenStore,
            "wasi:keyvalue/atomics.cas": crate::key_value::wasi::Cas,
        },
    });
}

/// The export of a cron component (`spin:cron@3.0.0`), called by the cron trigger. Its WIT,
/// `wit/deps/spin-cron@3.0.0/cron.wit`, is the one copy: the cron components generate theirs from it.
pub mod cron {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "spin:cron/spin-cron",
        exports: { default: async | store },
    });
}
