//! Request paths the gateway refuses rather than forwards: those an upstream could resolve to
//! another resource than the one the gateway matched against `listen.path`.
//!
//! A WebSocket client builds its URL from a page or a config and never sends dot segments or
//! encoded separators; such a path is a probe for a route behind the gateway (`/ws/../admin`
//! matches `/ws`, yet many servers resolve it to `/admin`). Refusing keeps one reading of the
//! path for the gateway and the upstream alike; normalising would make the gateway guess how
//! each upstream decodes, and would forward a path the client did not send.

/// True when `path` has no `.` or `..` segment (RFC 3986 section 3.3), also with its dots
/// percent-encoded (`%2e`), no encoded slash (`%2f`) or backslash (`%5c`), and no backslash:
/// an upstream that decodes or normalises such a path may route it elsewhere.
pub fn is_unambiguous(path: &str) -> bool {
    !path.contains('\\')
        && !contains_escape(path, b'2', b'f')
        && !contains_escape(path, b'5', b'c')
        && !path.split('/').any(is_dot_segment)
}

/// `.` or `..`, each dot either plain or `%2e` in either case.
fn is_dot_segment(segment: &str) -> bool {
    let mut rest = segment.as_bytes();
    let mut dots = 0;
    while !rest.is_empty() {
        rest = match rest {
            [b'.', tail @ ..] => tail,
            [b'%', b'2', e, tail @ ..] if e.eq_ignore_ascii_case(&b'e') => tail,
            _ => return false,
        };
        dots += 1;
    }
    (1..=2).contains(&dots)
}

/// True when `path` holds `%` followed by `high` and `low` (the latter in either case).
fn contains_escape(path: &str, high: u8, low: u8) -> bool {
    path.as_bytes()
        .windows(3)
        .any(|w| w[0] == b'%' && w[1] == high && w[2].eq_ignore_ascii_case(&low))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_are_refused_plain_or_encoded() {
        for path in [
            "/ws/../admin",
            "/ws/./x",
            "/ws/..",
            "/ws/.",
            "/..",
            "/ws/%2e%2e/admin",
            "/ws/%2E%2E/admin",
            "/ws/%2E./admin",
            "/ws/.%2e/admin",
            "/ws/%2e/x",
            "/ws/..%2fadmin",
            "/ws/..%2Fadmin",
            "/ws%2f..",
            "/ws/..%5cadmin",
            "/ws/..\\admin",
        ] {
            assert!(!is_unambiguous(path), "{path} must be refused");
        }
    }

    #[test]
    fn ordinary_paths_pass() {
        for path in [
            "/",
            "/ws",
            "/ws/room/1",
            "/ws/...",
            "/ws/.well-known",
            "/ws/a..b",
            "/ws/file.txt",
            "/ws/%2e%2e%2e",
            "/ws/%20x",
            "/ws/%252e%252e",
            "/ws//x",
        ] {
            assert!(is_unambiguous(path), "{path} must pass");
        }
    }
}
