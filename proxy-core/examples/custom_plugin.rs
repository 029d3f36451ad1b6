//! Writing your own plugin and attaching it from code (or from TOML with `use = "whoami"`).
//!
//! ```text
//! cargo run -p proxy-core --example custom_plugin
//! curl -H 'Host: app.localhost' http://127.0.0.1:6189/whoami
//! ```

use async_trait::async_trait;
use pingora::proxy::Session;
use pingora::server::{configuration::Opt, Server};
use proxy_core::config::{ConfigBuilder, LocationBuilder, SiteBuilder};
use proxy_core::plugin::{Plugin, PluginCtx, PluginError, PluginOptions, PluginRegistry};
use proxy_core::plugin::{PluginSetup, RequestFlow};
use proxy_core::{server_conf, EdgeServices, LocalAnswer};
use std::sync::Arc;

/// Answers `GET /whoami` with the client's address and a greeting from its options.
struct WhoAmI(String);

#[async_trait]
impl Plugin for WhoAmI {
    async fn request(&self, s: &mut Session, ctx: PluginCtx<'_>) -> pingora::Result<RequestFlow> {
        if s.req_header().uri.path() != "/whoami" {
            return Ok(RequestFlow::Continue);
        }
        let who = ctx
            .client_ip()
            .map_or("unknown".into(), |ip| ip.to_string());
        let body = format!("{}, {who}, on site {}\n", self.0, ctx.site_name());
        Ok(RequestFlow::Answer(LocalAnswer::text(200, body)))
    }
}

fn whoami(options: &PluginOptions, _: PluginSetup<'_>) -> Result<Arc<dyn Plugin>, PluginError> {
    let greeting = match options.get("greeting") {
        None => "hello",
        Some(value) => value.as_str().ok_or("`greeting` must be a string")?,
    };
    Ok(Arc::new(WhoAmI(greeting.to_string())))
}

fn main() {
    let mut registry = PluginRegistry::new();
    registry.register("whoami", whoami);
    let options = PluginOptions::from_iter([("greeting".into(), "hi".into())]);
    let site = SiteBuilder::new()
        .host("app.localhost")
        .plugin("whoami", options)
        .location(LocationBuilder::new("/").respond(200, "hello\n"));
    let config = ConfigBuilder::new()
        .plugin_registry(registry)
        .listen("127.0.0.1:6189");
    let config = config.site("app", site).build().unwrap_or_else(|errors| {
        eprintln!("invalid config:\n{errors}");
        std::process::exit(1)
    });
    let mut server = Server::new_with_opt_and_conf(Opt::default(), server_conf(config.server()));
    server.bootstrap();
    EdgeServices::new(&server.configuration, config).add_to(&mut server);
    server.run_forever();
}
