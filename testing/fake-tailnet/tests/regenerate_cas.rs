//! Regenerates the committed test CAs in `testdata/tls/`. Run only on purpose:
//! `cargo test -p fake-tailnet --test regenerate_cas -- --ignored`
//! (then rebuild, since the PEMs are embedded with `include_str!`).

use fake_tailnet::{
    generate_ca_pem, tls_testdata_dir, TAILNET_CA_COMMON_NAME, WRONG_CA_COMMON_NAME,
};

#[test]
#[ignore = "rewrites committed fixtures"]
fn regenerate_test_cas() {
    let dir = tls_testdata_dir();
    std::fs::create_dir_all(&dir).unwrap();
    for (stem, cn) in [
        ("tailnet-ca", TAILNET_CA_COMMON_NAME),
        ("wrong-ca", WRONG_CA_COMMON_NAME),
    ] {
        let (cert, key) = generate_ca_pem(cn).unwrap();
        std::fs::write(dir.join(format!("{stem}.pem")), cert).unwrap();
        std::fs::write(dir.join(format!("{stem}-key.pem")), key).unwrap();
    }
}
