//! The route table: the first `[[routes]]` entry whose path and methods match applies.

use std::sync::Arc;

use http::Method;
use portcullis::headers::Profile;
use portcullis::path::PathPattern;
use portcullis::validate::BodyRules;

use crate::config::RouteConfig;
use crate::telemetry::metrics::{DEFAULT_ROUTE, RouteMetrics};

/// A configured route, ready to match.
#[derive(Debug)]
pub struct Route {
    /// Its name in logs and metrics.
    pub name: Arc<str>,
    pattern: Option<PathPattern>,
    methods: Option<Vec<Method>>,
    /// Roles that may use it (one suffices); empty: anyone.
    pub roles: Vec<String>,
    /// Lockout in front of the upstream's login route: the username field.
    pub login_username_field: Option<String>,
    /// Whether every request to it is audited.
    pub audit: bool,
    /// Its security-header profile, replacing `headers.profile`.
    pub headers: Option<Profile>,
    /// Its body limit, replacing `limits.body`.
    pub body_limit: Option<u64>,
    /// Checks on its JSON bodies; `None`: bodies stream through.
    pub body: Option<Arc<BodyRules>>,
    /// Its response caching (`cache = {…}`).
    pub cache: Option<crate::cache::RouteCache>,
    /// Its metric handles.
    pub metrics: RouteMetrics,
}

impl Route {
    fn matches(&self, method: &Method, key: &str) -> bool {
        let method_ok = self.methods.as_ref().is_none_or(|ms| ms.contains(method));
        method_ok && self.pattern.as_ref().is_some_and(|p| p.matches(key))
    }
}

/// All routes, plus the default for requests no route covers.
#[derive(Debug)]
pub struct Routes {
    routes: Vec<Route>,
    default: Route,
}

impl Routes {
    /// Compiles the configured routes.
    pub fn new(cfgs: &[RouteConfig]) -> Self {
        let routes = cfgs
            .iter()
            .map(|c| Route {
                name: c.name.clone(),
                pattern: Some(c.path.clone()),
                methods: c.methods.clone(),
                roles: c.roles.clone(),
                login_username_field: c.login_username_field.clone(),
                audit: c.audit,
                headers: c.headers,
                body_limit: c.body_limit,
                body: c.body.clone(),
                cache: c.cache.clone(),
                metrics: RouteMetrics::new(c.name.clone()),
            })
            .collect();
        let name: Arc<str> = Arc::from(DEFAULT_ROUTE);
        Self {
            routes,
            default: Route {
                name: name.clone(),
                pattern: None,
                methods: None,
                roles: Vec::new(),
                login_username_field: None,
                audit: false,
                headers: None,
                body_limit: None,
                body: None,
                cache: None,
                metrics: RouteMetrics::new(name),
            },
        }
    }

    /// The route for a request with this method and normalised path match key.
    pub fn find(&self, method: &Method, key: &str) -> &Route {
        self.routes
            .iter()
            .find(|r| r.matches(method, key))
            .unwrap_or(&self.default)
    }

    /// The route of requests refused before routing.
    pub fn unrouted(&self) -> &Route {
        &self.default
    }
}
