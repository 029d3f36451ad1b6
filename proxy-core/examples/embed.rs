//! Embedding proxy-core in your own Pingora server, configured from code.
//!
//! ```text
//! python3 -m http.server 8000 --bind 127.0.0.1 &     # any local origin
//! cargo run -p proxy-core --example embed
//! curl -H 'Host: app.localhost' http://127.0.0.1:6188/
//! curl -H 'Host: app.localhost' http://127.0.0.1:6188/ping
//! ```

use pingora::server::configuration::Opt;
use pingora::server::Server;
use proxy_core::config::{ConfigBuilder, LocationBuilder, SiteBuilder, UpstreamBuilder};
use proxy_core::{server_conf, EdgeServices};

fn main() {
    // The same runtime a TOML file would compile to; errors name the offending key.
    let config = ConfigBuilder::new()
        .listen("127.0.0.1:6188")
        .threads(1)
        .grace_period("1s")
        .unknown_host_status(421)
        // Tailnet names resolve through MagicDNS in the background; an IP needs no lookup.
        .upstream(
            "app",
            UpstreamBuilder::new("127.0.0.1:8000").read_timeout("10s"),
        )
        .site(
            "app",
            SiteBuilder::new()
                .host("app.localhost")
                .host("*.app.localhost")
                .location(LocationBuilder::new("/").proxy("app"))
                .location(LocationBuilder::new("= /ping").respond(200, "pong\n"))
                .location(LocationBuilder::new("^~ /old/").redirect(301, "/new$request_uri")),
        )
        .build()
        .unwrap_or_else(|errors| {
            eprintln!("invalid config:\n{errors}");
            std::process::exit(1)
        });

    let mut server = Server::new_with_opt_and_conf(Opt::default(), server_conf(config.server()));
    server.bootstrap();
    let services = EdgeServices::new(&server.configuration, config);
    // Keep `services.reloader()` to swap in a new config later (hot reload).
    // The proxy, the MagicDNS resolver, and /metrics, /healthz, /readyz on 127.0.0.1:9091.
    services.add_to(&mut server);
    server.run_forever();
}
