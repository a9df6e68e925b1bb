//! Python `string.Template.safe_substitute`, which torchrun applies to every worker argument
//! (`${local_rank}`) and to the log line prefix template (`${rank}`, `${role_name}`, ...).
//! Unknown names and malformed placeholders stay as written; `$$` becomes `$`.

/// Substitutes `$name` and `${name}` from `vars`, leaving everything else untouched.
pub fn safe_substitute(text: &str, vars: &[(&str, &str)]) -> String {
    let lookup = |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(braced) = after.strip_prefix('{') {
            match braced.find('}') {
                Some(end) if is_identifier(&braced[..end]) => {
                    match lookup(&braced[..end]) {
                        Some(value) => out.push_str(value),
                        None => out.push_str(&rest[pos..pos + end + 3]),
                    }
                    rest = &braced[end + 1..];
                }
                _ => {
                    out.push('$');
                    rest = after;
                }
            }
        } else {
            let len = identifier_len(after);
            match (len > 0).then(|| lookup(&after[..len])).flatten() {
                Some(value) => out.push_str(value),
                None => out.push_str(&rest[pos..pos + 1 + len]),
            }
            rest = &after[len..];
        }
    }
    out.push_str(rest);
    out
}

/// Python's Template identifier pattern: `[_a-z][_a-z0-9]*` (case-insensitive, ASCII).
fn identifier_len(s: &str) -> usize {
    let bytes = s.as_bytes();
    if bytes.is_empty() || !(bytes[0].is_ascii_alphabetic() || bytes[0] == b'_') {
        return 0;
    }
    bytes
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
        .count()
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty() && identifier_len(s) == s.len()
}

#[cfg(test)]
mod tests {
    use super::safe_substitute;

    const VARS: &[(&str, &str)] = &[("local_rank", "3"), ("rank", "7")];

    #[test]
    fn substitutes_both_forms() {
        assert_eq!(safe_substitute("--lr=${local_rank}", VARS), "--lr=3");
        assert_eq!(safe_substitute("$local_rank/x", VARS), "3/x");
        assert_eq!(safe_substitute("[rank${rank}]: ", VARS), "[rank7]: ");
    }

    #[test]
    fn leaves_unknown_and_malformed_alone() {
        assert_eq!(
            safe_substitute("$HOME ${other} $", VARS),
            "$HOME ${other} $"
        );
        assert_eq!(safe_substitute("${local_rank", VARS), "${local_rank");
        assert_eq!(safe_substitute("${1x} $1", VARS), "${1x} $1");
        assert_eq!(safe_substitute("no dollars", VARS), "no dollars");
    }

    #[test]
    fn double_dollar_escapes() {
        assert_eq!(safe_substitute("$$local_rank", VARS), "$local_rank");
        assert_eq!(safe_substitute("a$$$local_rank", VARS), "a$3");
    }

    #[test]
    fn identifier_stops_at_non_word() {
        assert_eq!(safe_substitute("$local_rank-$rank.", VARS), "3-7.");
        assert_eq!(safe_substitute("$local_ranks", VARS), "$local_ranks");
    }
}
