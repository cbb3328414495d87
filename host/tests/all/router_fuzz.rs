//! Router fuzz: random paths against the shipped spin.toml routes and against random route
//! tables, checked against a plain restatement of Spin's rules (README "kana-host, in short"):
//! no panic, a duplicate route is refused, and every path goes to the most specific matching
//! route (more literal segments, then more `:name`s, then no wildcard; ties to manifest order)
//! with its parameters and path info. No network, no components: runs without the wasm build.
//!
//! `KANA_FUZZ_CASES` (default 20000 paths) and `KANA_FUZZ_SEED` set the budget, as for the
//! decoder fuzz in components/inference/tests/fuzz.rs.

use kana_host::http::router::{Route, RouteMatch, Router};
use kana_host::manifest::Manifest;

use crate::support::repo_root;

/// SplitMix64: a seeded, repeatable stream (the host has no rand dependency, and needs none).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// A route as the rules describe it, parsed independently of `Route::parse`.
#[derive(Debug)]
struct Spec {
    raw: String,
    component: String,
    /// `Some(literal)` or `None` for `:name`, with the names alongside.
    segments: Vec<Option<String>>,
    names: Vec<String>,
    wildcard: bool,
}

impl Spec {
    /// None where `Route::parse` must refuse the route.
    fn parse(raw: &str, component: &str) -> Option<Spec> {
        if !raw.starts_with('/') {
            return None;
        }
        let (body, wildcard) = match raw.strip_suffix("/...") {
            Some(body) => (body, true),
            None => (raw, false),
        };
        let (mut segments, mut names) = (Vec::new(), Vec::new());
        for part in body.split('/').filter(|p| !p.is_empty()) {
            match part {
                "..." | ":" => return None,
                _ if part.starts_with(':') => {
                    segments.push(None);
                    names.push(part[1..].to_string());
                }
                _ => segments.push(Some(part.to_string())),
            }
        }
        Some(Spec { raw: raw.into(), component: component.into(), segments, names, wildcard })
    }

    fn specificity(&self) -> (usize, usize, bool) {
        let literals = self.segments.iter().filter(|s| s.is_some()).count();
        (literals, self.segments.len() - literals, !self.wildcard)
    }

    fn matches(&self, parts: &[&str]) -> bool {
        let lengths_fit = if self.wildcard { parts.len() >= self.segments.len() } else { parts.len() == self.segments.len() };
        lengths_fit && self.segments.iter().zip(parts).all(|(s, p)| s.as_deref().is_none_or(|lit| lit == *p))
    }
}

/// What the rules say `path` routes to: the index of the winning spec.
fn expected(specs: &[Spec], path: &str) -> Option<usize> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let mut best: Option<usize> = None;
    for (i, spec) in specs.iter().enumerate() {
        if spec.matches(&parts) && best.is_none_or(|b| spec.specificity() > specs[b].specificity()) {
            best = Some(i);
        }
    }
    best
}

/// Checks one routing result against the rules; a message on mismatch.
fn verify(specs: &[Spec], path: &str, got: Option<RouteMatch<'_>>) -> Result<(), String> {
    let (spec, m) = match (expected(specs, path), got) {
        (None, None) => return Ok(()),
        (Some(i), Some(m)) => (&specs[i], m),
        (want, got) => return Err(format!("{path:?}: expected {:?}, got {got:?}", want.map(|i| &specs[i].raw))),
    };
    if (m.component, m.raw_route) != (spec.component.as_str(), spec.raw.as_str()) {
        return Err(format!("{path:?}: expected {} ({}), got {m:?}", spec.raw, spec.component));
    }
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let params: Vec<(String, String)> = spec
        .segments
        .iter()
        .zip(&parts)
        .filter(|(s, _)| s.is_none())
        .zip(&spec.names)
        .map(|((_, value), name)| (name.clone(), value.to_string()))
        .collect();
    let rest = &parts[spec.segments.len()..];
    let path_info = if rest.is_empty() { String::new() } else { format!("/{}", rest.join("/")) };
    let component_route = match spec.raw.strip_suffix("/...").unwrap_or(&spec.raw) {
        "" => "/",
        r => r,
    };
    if m.params != params || m.path_info != path_info || m.component_route != component_route {
        return Err(format!(
            "{path:?} on {}: got params {:?}, path_info {:?}, component_route {:?}; expected {params:?}, {path_info:?}, {component_route:?}",
            spec.raw, m.params, m.path_info, m.component_route
        ));
    }
    Ok(())
}

const WORDS: &[&str] = &["a", "b", "predict", "models", "tasks", "health", "cnn", "x"];

/// A random route: mostly valid, sometimes with doubled or trailing slashes or a malformed part.
fn random_route(rng: &mut Rng) -> String {
    let mut route = String::new();
    for _ in 0..rng.below(4) {
        route.push_str(if rng.chance(10) { "//" } else { "/" });
        route.push_str(rng.pick(&["a", "b", "predict", ":x", ":id"]));
    }
    if rng.chance(30) {
        route.push_str("/...");
    } else if rng.chance(10) {
        route.push('/');
    }
    if rng.chance(5) {
        route = rng.pick(&["", "a", "/a/.../b", "/:", "/.../...", "/a...", "/::x", "..."]).to_string();
    }
    if route.is_empty() && rng.chance(50) { "/".into() } else { route }
}

/// A path `spec` matches, with its `:name`s and wildcard filled in: where routes overlap, this
/// is where the specificity rules decide.
fn path_for(rng: &mut Rng, spec: &Spec) -> String {
    let mut parts: Vec<&str> = spec.segments.iter().map(|s| s.as_deref().unwrap_or_else(|| rng.pick(WORDS))).collect();
    if spec.wildcard {
        parts.extend((0..rng.below(3)).map(|_| rng.pick(WORDS)));
    }
    format!("/{}", parts.join("/"))
}

/// A random request path: words the routes use, odd segments, and odd slashes.
fn random_path(rng: &mut Rng) -> String {
    let mut path = String::new();
    if rng.chance(95) {
        path.push('/');
    }
    for i in 0..rng.below(6) {
        if i > 0 {
            path.push_str(rng.pick(&["/", "/", "/", "/", "//", "///"]));
        }
        if rng.chance(70) {
            path.push_str(rng.pick(WORDS));
        } else {
            path.push_str(rng.pick(&["...", ":x", ".", "..", "%2F", "ü", "日本", " ", "?q=1", "a b", "\u{0}", "-", ":"]));
        }
    }
    if rng.chance(20) {
        path.push('/');
    }
    path
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

#[test]
fn random_paths_route_as_the_rules_say_on_the_shipped_and_random_tables() {
    let cases = env_number("KANA_FUZZ_CASES", 20_000);
    let mut rng = Rng(env_number("KANA_FUZZ_SEED", 0x6b61_6e61));

    let manifest = Manifest::load(&repo_root().join("spin.toml")).unwrap();
    let shipped_specs: Vec<Spec> =
        manifest.http_triggers.iter().map(|t| Spec::parse(&t.route, &t.component).expect("a valid shipped route")).collect();
    let shipped = Router::new(
        manifest.http_triggers.iter().map(|t| Route::parse(&t.route, &t.component).unwrap()).collect(),
    )
    .unwrap();

    let (mut failures, mut tables, mut refused, mut matched) = (Vec::new(), 0, 0, 0);
    let (mut specs, mut router) = (Vec::new(), Router::default());
    for case in 0..cases {
        if case % 50 == 0 {
            // A new random table; Router::new must refuse exactly the tables with a duplicate.
            let raws: Vec<String> = (0..1 + rng.below(8)).map(|_| random_route(&mut rng)).collect();
            let parsed: Vec<_> = raws.iter().enumerate().map(|(i, r)| (r, Route::parse(r, &format!("c{i}")))).collect();
            for (raw, result) in &parsed {
                if result.is_ok() != Spec::parse(raw, "").is_some() {
                    failures.push(format!("Route::parse({raw:?}) = {:?}", result.as_ref().map(|r| &r.raw)));
                }
            }
            let valid: Vec<Route> = parsed.into_iter().filter_map(|(_, r)| r.ok()).collect();
            specs = valid.iter().map(|r| Spec::parse(&r.raw, &r.component).unwrap()).collect();
            let duplicate = specs.iter().enumerate().any(|(i, a)| {
                specs[..i].iter().any(|b| same_shape(a, b))
            });
            tables += 1;
            match Router::new(valid) {
                Ok(r) if !duplicate => router = r,
                Err(_) if duplicate => {
                    refused += 1;
                    specs.clear();
                    router = Router::default();
                }
                other => failures.push(format!("Router::new on {:?}: {:?}, duplicate {duplicate}", specs.iter().map(|s| &s.raw).collect::<Vec<_>>(), other.map(|_| ()))),
            }
        }
        let path = match rng.below(3) {
            0 if !specs.is_empty() => {
                let i = rng.below(specs.len());
                path_for(&mut rng, &specs[i])
            }
            1 => {
                let i = rng.below(shipped_specs.len());
                path_for(&mut rng, &shipped_specs[i])
            }
            _ => random_path(&mut rng),
        };
        matched += usize::from(shipped.route(&path).is_some());
        for (table, specs) in [(&shipped, &shipped_specs), (&router, &specs)] {
            if let Err(e) = verify(specs, &path, table.route(&path)) {
                failures.push(e);
            }
        }
        if failures.len() > 20 {
            break;
        }
    }
    eprintln!("router fuzz: {cases} paths, {tables} random tables ({refused} refused as duplicates), {matched} paths matched a shipped route");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(matched > 0 && refused > 0 && refused < tables, "the generators must reach both outcomes");
}

/// Two routes match the same paths when their literals sit in the same places (names may differ).
fn same_shape(a: &Spec, b: &Spec) -> bool {
    a.wildcard == b.wildcard && a.segments == b.segments
}
