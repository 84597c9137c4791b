//! Any bytes as a config file: parsing and validation report errors, never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        match weir_config::load_yaml(text) {
            Ok(cfg) => {
                // A valid config survives a round trip through its own serialisation.
                let _ = weir_config::validate(cfg.into_spec());
            }
            Err(errors) => assert!(!errors.is_empty()),
        }
    }
});
