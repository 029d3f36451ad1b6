//! Every fuzz target over its seed corpus in `testdata/fuzz/<target>/`, including each input
//! a fuzzer once crashed on: none may panic. Runs with the `fuzzing` feature
//! (`cargo test -p proxy-core --features fuzzing --test fuzz_corpus`), as CI does.

#![cfg(feature = "fuzzing")]

use std::path::Path;

#[test]
fn every_target_survives_its_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/fuzz");
    for (name, target) in proxy_core::fuzzing::TARGETS {
        let dir = root.join(name);
        let mut inputs = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("corpus entry").path();
            let data = std::fs::read(&path).expect("read corpus input");
            target(&data);
            inputs += 1;
        }
        assert!(inputs > 0, "no seed inputs for {name}");
    }
}
