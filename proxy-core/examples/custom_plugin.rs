//! Writing your own plugin and attaching it from code (or from TOML with `use = "whoami"`).
//!
//! ```text
//! cargo run -p proxy-core --example custom_plugin
//! curl -H 'Host: app.localhost' http://127.0.0.1:6189/whoami
//! ```

use async_trait::async_trait;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::server::{configuration::Opt, Server};
use proxy_core::answer::LocalAnswer;
use proxy_core::builder::{ConfigBuilder, LocationBuilder, SiteBuilder};
use proxy_core::plugin::{
    Plugin, PluginCtx, PluginOptions, PluginRegistry, PluginSetup, RequestFlow,
};
use proxy_core::{server_conf, EdgeServices};
use std::sync::Arc;

/// Answers `GET /whoami` with the client's address and tags every response of the site.
struct WhoAmI {
    tag: String,
}

#[async_trait]
impl Plugin for WhoAmI {
    async fn request(
        &self,
        session: &mut Session,
        ctx: PluginCtx<'_>,
    ) -> pingora::Result<RequestFlow> {
        if session.req_header().uri.path() != "/whoami" {
            return Ok(RequestFlow::Continue);
        }
        let who = ctx
            .client_ip
            .map_or("unknown".to_string(), |ip| ip.to_string());
        Ok(RequestFlow::Answer(LocalAnswer::text(
            200,
            format!("{who} on site {}\n", ctx.site.name),
        )))
    }

    fn response(&self, response: &mut ResponseHeader, _ctx: PluginCtx<'_>) -> pingora::Result<()> {
        response.insert_header("x-served-by", self.tag.as_str())
    }
}

fn whoami(options: &PluginOptions, _setup: PluginSetup<'_>) -> Result<Arc<dyn Plugin>, String> {
    let tag = match options.get("tag") {
        None => "edge".to_string(),
        Some(value) => value.as_str().ok_or("`tag` must be a string")?.to_string(),
    };
    Ok(Arc::new(WhoAmI { tag }))
}

fn main() {
    let mut registry = PluginRegistry::new();
    registry.register("whoami", whoami);
    let mut options = PluginOptions::new();
    options.insert("tag".into(), "example".into());
    let config = ConfigBuilder::new()
        .plugin_registry(registry)
        .listen("127.0.0.1:6189")
        .threads(1)
        .site(
            "app",
            SiteBuilder::new()
                .host("app.localhost")
                .plugin("whoami", options)
                .location(LocationBuilder::new("/").respond(200, "hello\n")),
        )
        .build()
        .unwrap_or_else(|errors| {
            eprintln!("invalid config:\n{errors}");
            std::process::exit(1)
        });
    let mut server = Server::new_with_opt_and_conf(Opt::default(), server_conf(&config.server));
    server.bootstrap();
    let services = EdgeServices::new(&server.configuration, Arc::new(config));
    server.add_service(services.resolver);
    server.add_service(services.proxy);
    server.run_forever();
}
