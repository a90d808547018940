//! Bindings generated from `wit/`; hidden from plugin authors, who use the
//! re-exports and the `Backend` trait in the crate root instead.

wit_bindgen::generate!({
    path: "../wit",
    world: "sluice:storage/plugin@0.2.0",
    pub_export_macro: true,
    export_macro_name: "__export_plugin",
    default_bindings_module: "sluice_sdk::__private::bindings",
});
