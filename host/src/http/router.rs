//! Spin's HTTP routing: exact routes, `:name` segments and a trailing `/...` wildcard.
//!
//! When several routes match, the most specific wins: more literal segments first, then more
//! `:name` segments, then a route without wildcard; a remaining tie goes to manifest order.

use anyhow::{Result, bail};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

/// One `[[trigger.http]]` route, parsed.
#[derive(Debug, Clone)]
pub struct Route {
    /// As written in the manifest, e.g. `/jobs/:id` or `/static/...`.
    pub raw: String,
    pub component: String,
    segments: Vec<Segment>,
    wildcard: bool,
}

/// The outcome of routing one request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch<'a> {
    pub component: &'a str,
    /// The route as written (`spin-raw-component-route`, `spin-matched-route`).
    pub raw_route: &'a str,
    /// The route without its `/...` tail (`spin-component-route`).
    pub component_route: String,
    /// What the wildcard matched, with a leading `/`, or empty (`spin-path-info`).
    pub path_info: String,
    /// `:name` → value (`spin-path-match-<name>`).
    pub params: Vec<(String, String)>,
}

impl Route {
    pub fn parse(raw: &str, component: &str) -> Result<Self> {
        if !raw.starts_with('/') {
            bail!("route `{raw}` must start with `/`");
        }
        let (body, wildcard) = match raw.strip_suffix("/...") {
            Some(prefix) => (prefix, true),
            None => (raw, false),
        };
        let mut segments = Vec::new();
        for part in body.split('/').filter(|s| !s.is_empty()) {
            if part == "..." {
                bail!("route `{raw}`: `...` may only end a route");
            }
            segments.push(match part.strip_prefix(':') {
                Some("") => bail!("route `{raw}`: `:` needs a name"),
                Some(name) => Segment::Param(name.to_owned()),
                None => Segment::Literal(part.to_owned()),
            });
        }
        Ok(Route { raw: raw.to_owned(), component: component.to_owned(), segments, wildcard })
    }

    /// Whether both routes match exactly the same paths (`:name`s may differ).
    fn same_paths_as(&self, other: &Route) -> bool {
        let shape = |r: &Route| -> Vec<Option<String>> {
            r.segments.iter().map(|s| if let Segment::Literal(l) = s { Some(l.clone()) } else { None }).collect()
        };
        self.wildcard == other.wildcard && shape(self) == shape(other)
    }

    /// Ordering key: larger is more specific.
    fn specificity(&self) -> (usize, usize, bool) {
        let literals = self.segments.iter().filter(|s| matches!(s, Segment::Literal(_))).count();
        (literals, self.segments.len() - literals, !self.wildcard)
    }

    fn matches(&self, path: &str) -> Option<RouteMatch<'_>> {
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        if parts.len() < self.segments.len() || (!self.wildcard && parts.len() != self.segments.len()) {
            return None;
        }
        let mut params = Vec::new();
        for (segment, part) in self.segments.iter().zip(&parts) {
            match segment {
                Segment::Literal(lit) if lit == part => {}
                Segment::Literal(_) => return None,
                Segment::Param(name) => params.push((name.clone(), (*part).to_owned())),
            }
        }
        let rest = &parts[self.segments.len()..];
        let path_info = if rest.is_empty() { String::new() } else { format!("/{}", rest.join("/")) };
        let component_route = self.raw.strip_suffix("/...").unwrap_or(&self.raw);
        Some(RouteMatch {
            component: &self.component,
            raw_route: &self.raw,
            component_route: if component_route.is_empty() { "/".into() } else { component_route.into() },
            path_info,
            params,
        })
    }
}

/// All HTTP routes of the application.
#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    pub fn new(routes: Vec<Route>) -> Result<Self> {
        for (i, a) in routes.iter().enumerate() {
            if let Some(b) = routes[..i].iter().find(|b| b.same_paths_as(a)) {
                bail!("routes `{}` and `{}` are the same route", b.raw, a.raw);
            }
        }
        Ok(Router { routes })
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    pub fn route(&self, path: &str) -> Option<RouteMatch<'_>> {
        let mut best: Option<(&Route, RouteMatch<'_>)> = None;
        for route in &self.routes {
            if let Some(m) = route.matches(path) {
                // `>` (not `>=`) keeps the earlier route on a tie.
                if best.as_ref().is_none_or(|(b, _)| route.specificity() > b.specificity()) {
                    best = Some((route, m));
                }
            }
        }
        best.map(|(_, m)| m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(routes: &[(&str, &str)]) -> Router {
        Router::new(routes.iter().map(|(r, c)| Route::parse(r, c).unwrap()).collect()).unwrap()
    }

    #[test]
    fn exact_routes_match_only_themselves() {
        let r = router(&[("/health", "health")]);
        assert_eq!(r.route("/health").unwrap().component, "health");
        assert_eq!(r.route("/health/").unwrap().component, "health");
        assert!(r.route("/health/x").is_none());
        assert!(r.route("/").is_none());
        assert!(r.route("/healthz").is_none());
    }

    #[test]
    fn wildcard_matches_prefix_and_reports_path_info() {
        let r = router(&[("/static/...", "files")]);
        let m = r.route("/static/css/site.css").unwrap();
        assert_eq!(m.path_info, "/css/site.css");
        assert_eq!(m.component_route, "/static");
        assert_eq!(m.raw_route, "/static/...");
        assert_eq!(r.route("/static").unwrap().path_info, "");
        assert!(r.route("/statics").is_none());
    }

    #[test]
    fn params_are_captured() {
        let r = router(&[("/jobs/:id/result", "jobs")]);
        let m = r.route("/jobs/42/result").unwrap();
        assert_eq!(m.params, vec![("id".to_owned(), "42".to_owned())]);
        assert!(r.route("/jobs/42").is_none());
    }

    #[test]
    fn most_specific_route_wins() {
        let r = router(&[
            ("/...", "catch-all"),
            ("/predict/...", "predict-any"),
            ("/predict/:model", "predict-model"),
            ("/predict/batch", "predict-batch"),
            ("/health", "health"),
        ]);
        assert_eq!(r.route("/predict/batch").unwrap().component, "predict-batch");
        assert_eq!(r.route("/predict/k49").unwrap().component, "predict-model");
        assert_eq!(r.route("/predict/k49/extra").unwrap().component, "predict-any");
        assert_eq!(r.route("/predict").unwrap().component, "predict-any");
        assert_eq!(r.route("/health").unwrap().component, "health");
        let root = r.route("/anything/else").unwrap();
        assert_eq!((root.component, root.component_route.as_str()), ("catch-all", "/"));
        assert_eq!(root.path_info, "/anything/else");
    }

    #[test]
    fn ties_go_to_manifest_order() {
        let r = router(&[("/a/:x", "first"), ("/:y/b", "second")]);
        assert_eq!(r.route("/a/b").unwrap().component, "first");
    }

    #[test]
    fn rejects_malformed_and_duplicate_routes() {
        assert!(Route::parse("health", "c").is_err());
        assert!(Route::parse("/a/.../b", "c").is_err());
        assert!(Route::parse("/a/:", "c").is_err());
        let dup = vec![Route::parse("/a/:x", "c").unwrap(), Route::parse("/a/:y", "d").unwrap()];
        assert!(Router::new(dup).is_err());
    }
}
