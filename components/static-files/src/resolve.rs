//! The pure rules of the static-files component: which request path names which file under the
//! `/web` mount, with what content type and caching. No I/O, so the rules are unit-tested natively
//! (`cargo test -p static-files`) and end to end by the host test `host/tests/all/web.rs`.

/// Why a request path names no file we would serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 400: a `..` or `.` segment, a hidden name, a backslash, an empty segment (`//x`, an
    /// absolute path after the leading `/`), a bad `%` escape or any character outside
    /// `[A-Za-z0-9._-]`, before or after percent-decoding.
    BadPath(String),
    /// 404: a well-formed name whose extension we do not serve.
    UnknownType(String),
}

/// A file to read from the mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Relative to the mount, `/`-separated, every segment checked (e.g. `index.html`).
    pub relative: String,
    pub content_type: &'static str,
    pub cache_control: &'static str,
}

/// Where the `web/` folder is mounted (spin.toml `files`).
pub const MOUNT: &str = "/web";

/// HTML is revalidated on every load (so a changed page shows at once); the assets it names may
/// be reused for a few minutes.
const HTML_CACHE: &str = "no-cache";
const ASSET_CACHE: &str = "public, max-age=300";

/// The request path (`/`, `/app.js`, `/img/x.png`) → the file it names. A path ending in `/`
/// names that folder's `index.html`: folders are never listed. A last segment without an
/// extension names its `.html` page (`/docs` → `docs.html`).
pub fn resolve(path: &str) -> Result<Target, Refusal> {
    let bad = |why: &str| Refusal::BadPath(format!("{why}: {path:?}"));
    let decoded = percent_decode(path).ok_or_else(|| bad("bad percent escape"))?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad("not UTF-8"))?;
    let rest = decoded.strip_prefix('/').ok_or_else(|| bad("not absolute"))?;
    let mut relative = rest.to_owned();
    if relative.is_empty() || relative.ends_with('/') {
        relative.push_str("index.html");
    } else if !relative.rsplit('/').next().is_some_and(|last| last.contains('.')) {
        relative.push_str(".html");
    }
    for segment in relative.split('/') {
        if segment.is_empty() {
            return Err(bad("empty segment"));
        }
        if segment.starts_with('.') {
            return Err(bad("dot segment or hidden name"));
        }
        if !segment.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
            return Err(bad("character outside [A-Za-z0-9._-]"));
        }
    }
    let content_type = content_type(&relative).ok_or_else(|| Refusal::UnknownType(relative.clone()))?;
    let cache_control = if content_type.starts_with("text/html") { HTML_CACHE } else { ASSET_CACHE };
    Ok(Target { relative, content_type, cache_control })
}

/// The types the page needs; anything else is not served.
pub fn content_type(name: &str) -> Option<&'static str> {
    let (_, extension) = name.rsplit_once('.')?;
    Some(match extension.to_ascii_lowercase().as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "txt" => "text/plain; charset=utf-8",
        _ => return None,
    })
}

/// A strong validator from the content (FNV-1a, 64 bits): cheap, and stable across restarts and
/// instances, unlike a modification time on a read-only mount.
pub fn etag(bytes: &[u8]) -> String {
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("\"{hash:016x}\"")
}

/// Whether an `If-None-Match` header value matches `etag` (a list, `*`, or weak forms).
pub fn not_modified(if_none_match: &str, etag: &str) -> bool {
    if_none_match.split(',').map(str::trim).any(|tag| tag == "*" || tag.trim_start_matches("W/") == etag)
}

/// `%XX` → byte; `None` on a truncated or non-hex escape.
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_and_folders_name_their_index_page() {
        let root = resolve("/").unwrap();
        assert_eq!(root.relative, "index.html");
        assert_eq!(root.content_type, "text/html; charset=utf-8");
        assert_eq!(root.cache_control, "no-cache");
        assert_eq!(resolve("/docs/").unwrap().relative, "docs/index.html");
        let docs = resolve("/docs").unwrap();
        assert_eq!((docs.relative.as_str(), docs.content_type), ("docs.html", "text/html; charset=utf-8"));
        assert_eq!(resolve("/guide/intro").unwrap().relative, "guide/intro.html");
    }

    #[test]
    fn assets_get_their_type_and_a_short_cache() {
        for (path, relative, ty) in [
            ("/app.js", "app.js", "text/javascript; charset=utf-8"),
            ("/style.css", "style.css", "text/css; charset=utf-8"),
            ("/img/logo.svg", "img/logo.svg", "image/svg+xml"),
            ("/favicon.ico", "favicon.ico", "image/x-icon"),
            ("/a-b_c.PNG", "a-b_c.PNG", "image/png"),
            ("/openapi.json", "openapi.json", "application/json"),
            ("/app%2Ejs", "app.js", "text/javascript; charset=utf-8"),
        ] {
            let target = resolve(path).unwrap_or_else(|e| panic!("{path}: {e:?}"));
            assert_eq!((target.relative.as_str(), target.content_type), (relative, ty), "{path}");
            assert_eq!(target.cache_control, "public, max-age=300", "{path}");
        }
    }

    #[test]
    fn no_path_leaves_the_mount() {
        for path in [
            "/../spin.toml",
            "/..",
            "/./index.html",
            "/%2e%2e/spin.toml",
            "/%2E%2E%2Fspin.toml",
            "/web/..%2fCargo.toml",
            "/web/..%5cCargo.toml",
            "/..\\Cargo.toml",
            "//etc/passwd",
            "/%2fetc/passwd",
            "/a//b.js",
            "/.git/config",
            "/.env",
            "/C:%5cwindows.ini",
            "/app.js%00.png",
            "/%zz.js",
            "/%2",
            "/%c3%a9.js",
            "relative.js",
        ] {
            assert!(matches!(resolve(path), Err(Refusal::BadPath(_))), "{path}: {:?}", resolve(path));
        }
    }

    #[test]
    fn unknown_types_are_not_served() {
        assert_eq!(resolve("/Cargo.toml"), Err(Refusal::UnknownType("Cargo.toml".into())));
        assert_eq!(resolve("/models/x.onnx"), Err(Refusal::UnknownType("models/x.onnx".into())));
    }

    #[test]
    fn etags_follow_the_content() {
        let tag = etag(b"<html>");
        assert_eq!(tag, etag(b"<html>"));
        assert_ne!(tag, etag(b"<html> "));
        assert!(tag.starts_with('"') && tag.ends_with('"') && tag.len() == 18, "{tag}");
        assert!(not_modified(&tag, &tag));
        assert!(not_modified(&format!("\"x\", W/{tag}"), &tag));
        assert!(not_modified("*", &tag));
        assert!(!not_modified("\"0000000000000000\"", &tag));
    }
}
