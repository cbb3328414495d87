//! Generated bindings, one `bindgen!` per WIT world (WIT files under `host/wit/`).

/// Imports a Spin component may use beyond `wasi:*`: key-value and variables (host side).
pub mod spin {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "kana:host/spin-imports",
        imports: {
            // Building the stream and future can fail (a store error): a trap, not a guest error.
            "spin:key-value/key-value.[method]store.get-keys": async | store | trappable,
            default: async | store,
        },
        with: {
            "spin:key-value/key-value.store": crate::key_value::OpenStore,
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
