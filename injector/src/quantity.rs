//! Kubernetes resource quantities (`500m`, `1.5Gi`, `2e3`): validation only.
//! The apiserver keeps the string as given, so checking the grammar is enough
//! to turn a typo into a clear admission error instead of a rejected pod.

/// True when `s` is a valid quantity: a signed decimal number followed by an
/// optional binary suffix (Ki..Ei), decimal suffix (n, u, m, k, M..E) or
/// decimal exponent (`e3`, `E-2`).
pub fn is_valid(s: &str) -> bool {
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    let digits_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(digits_end);
    if !valid_number(number) {
        return false;
    }
    match suffix {
        "" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" | "n" | "u" | "m" | "k" | "M" | "G" | "T"
        | "P" | "E" => true,
        exp => valid_exponent(exp),
    }
}

/// `123`, `1.5`, `1.`, `.5`: one dot at most and at least one digit.
fn valid_number(n: &str) -> bool {
    n.bytes().filter(|&b| b == b'.').count() <= 1 && n.bytes().any(|b| b.is_ascii_digit())
}

/// `e3`, `E+3`, `e-2`.
fn valid_exponent(s: &str) -> bool {
    let Some(rest) = s.strip_prefix(['e', 'E']) else {
        return false;
    };
    let rest = rest.strip_prefix(['+', '-']).unwrap_or(rest);
    !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::is_valid;

    #[test]
    fn accepts_kubernetes_quantities() {
        for q in [
            "1", "0.5", ".5", "1.", "100m", "1Gi", "512Mi", "2Ki", "1e3", "1E-2", "+1", "-1",
            "1.5Ti", "3k", "4M", "10n", "10u",
        ] {
            assert!(is_valid(q), "{q} should be valid");
        }
    }

    #[test]
    fn rejects_garbage() {
        for q in [
            "", "abc", "1x", "1 Gi", "Gi", "1..2", "1gi", "1e", "1e+", "m", "1mi", "--1", "1Gib",
            ".",
        ] {
            assert!(!is_valid(q), "{q} should be invalid");
        }
    }
}
