//! Recursive-descent parser for policy text. Never panics; recursion is bounded by
//! [`MAX_DEPTH`], input by [`MAX_POLICY_LEN`].
//!
//! Grammar (whitespace is allowed between tokens; keywords ignore ASCII case):
//!
//! ```text
//! policy    = meta | signature
//! meta      = ("ANY" | "ALL" | "MAJORITY") WHITESPACE name        name = [A-Za-z0-9_-]+
//! signature = principal
//!           | ("AND" | "OR") "(" signature ("," signature)* ")"
//!           | "OutOf" "(" number "," signature ("," signature)* ")"
//! principal = "'" msp_id "." role "'" | '"' msp_id "." role '"'   (split on the last '.')
//! role      = "member" | "client" | "peer" | "orderer" | "admin"
//! ```

use super::{
    is_forbidden_in_msp_id, MetaRule, Policy, PolicyError, Principal, PrincipalRole,
    SignaturePolicy, MAX_DEPTH, MAX_POLICY_LEN, MAX_PRINCIPALS,
};

/// What may start a signature policy (used in error messages).
pub(super) const SIGNATURE_START: &str = "AND, OR, OutOf or a quoted principal";
/// What may start a whole policy (used in error messages).
const POLICY_START: &str = "AND, OR, OutOf, a quoted principal, or ANY/ALL/MAJORITY <SubPolicy>";

/// Parses `text`; implicit-meta policies are accepted only if `allow_meta`.
pub(super) fn parse_policy(text: &str, allow_meta: bool) -> Result<Policy, PolicyError> {
    if text.len() > MAX_POLICY_LEN {
        return Err(PolicyError::TooLong {
            len: text.len(),
            max: MAX_POLICY_LEN,
        });
    }
    let mut p = Parser {
        src: text,
        pos: 0,
        depth: 0,
        principals: 0,
    };
    p.skip_ws();
    let word = p.word();
    let policy = match MetaRule::from_keyword(word) {
        Some(rule) if allow_meta => p.meta(rule, word.len())?,
        _ => {
            let what = if allow_meta {
                POLICY_START
            } else {
                SIGNATURE_START
            };
            Policy::Signature(p.signature(what)?)
        }
    };
    p.skip_ws();
    if p.pos < text.len() {
        return Err(PolicyError::TrailingInput {
            pos: p.pos,
            found: p.found(),
        });
    }
    Ok(policy)
}

/// The three combinators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    And,
    Or,
    OutOf,
}

impl Gate {
    fn keyword(self) -> &'static str {
        match self {
            Gate::And => "AND",
            Gate::Or => "OR",
            Gate::OutOf => "OutOf",
        }
    }

    fn from_keyword(word: &str) -> Option<Self> {
        [Gate::And, Gate::Or, Gate::OutOf]
            .into_iter()
            .find(|g| g.keyword().eq_ignore_ascii_case(word))
    }
}

/// Parser state. Invariant: `pos` is a char boundary of `src`, at most `src.len()`.
#[derive(Debug)]
struct Parser<'a> {
    src: &'a str,
    pos: usize,
    /// Combinators currently open.
    depth: usize,
    /// Principals parsed so far.
    principals: usize,
}

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
        self.src.get(self.pos..).unwrap_or("")
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn skip_ws(&mut self) {
        let rest = self.rest();
        self.pos += rest.len() - rest.trim_start().len();
    }

    /// Consumes `c` if it comes next.
    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    /// The keyword-like word (ASCII letters, digits, `_`) starting here; may be empty.
    fn word(&self) -> &'a str {
        leading_word(self.rest())
    }

    /// Describes what comes next, for error messages.
    fn found(&self) -> String {
        describe(self.rest())
    }

    fn expected(&self, what: impl Into<String>) -> PolicyError {
        PolicyError::Syntax {
            pos: self.pos,
            expected: what.into(),
            found: self.found(),
        }
    }

    /// `ANY|ALL|MAJORITY <name>`, the keyword (of `kw_len` bytes) being next.
    fn meta(&mut self, rule: MetaRule, kw_len: usize) -> Result<Policy, PolicyError> {
        self.pos += kw_len;
        let before = self.pos;
        self.skip_ws();
        if self.pos == before {
            return Err(self.expected(format!("a space and a sub-policy name after {rule}")));
        }
        let rest = self.rest();
        let len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .unwrap_or(rest.len());
        if len == 0 {
            return Err(self.expected("a sub-policy name (letters, digits, '_' or '-')"));
        }
        let sub_policy = rest.get(..len).unwrap_or_default().to_owned();
        self.pos += len;
        Ok(Policy::ImplicitMeta { rule, sub_policy })
    }

    /// A principal or a combinator; `what` describes the expectation for errors.
    fn signature(&mut self, what: &str) -> Result<SignaturePolicy, PolicyError> {
        self.skip_ws();
        let start = self.pos;
        if let Some(quote @ ('\'' | '"')) = self.peek() {
            return self.principal(quote).map(SignaturePolicy::SignedBy);
        }
        let word = self.word();
        let Some(gate) = Gate::from_keyword(word) else {
            if MetaRule::from_keyword(word).is_some() {
                return Err(self.expected(format!(
                    "{what} (ANY/ALL/MAJORITY may only stand alone as a whole channel policy)"
                )));
            }
            return Err(self.expected(what));
        };
        self.pos += word.len();
        self.gate(gate, start)
    }

    /// The rest of a combinator whose keyword started at `start`.
    fn gate(&mut self, gate: Gate, start: usize) -> Result<SignaturePolicy, PolicyError> {
        if self.depth >= MAX_DEPTH {
            return Err(PolicyError::TooDeep {
                pos: start,
                max: MAX_DEPTH,
            });
        }
        self.depth += 1;
        self.skip_ws();
        if !self.eat('(') {
            return Err(self.expected(format!("'(' after {}", gate.keyword())));
        }
        let empty = PolicyError::EmptyRule {
            pos: start,
            keyword: gate.keyword(),
        };
        let mut count = None;
        if gate == Gate::OutOf {
            self.skip_ws();
            count = Some((self.pos, self.number()?));
            self.skip_ws();
            if self.peek() == Some(')') {
                return Err(empty);
            }
            if !self.eat(',') {
                return Err(self.expected("',' after the count of OutOf"));
            }
        }
        self.skip_ws();
        if self.peek() == Some(')') {
            return Err(empty);
        }
        let mut rules = Vec::new();
        loop {
            rules.push(self.signature(SIGNATURE_START)?);
            self.skip_ws();
            if self.eat(')') {
                break;
            }
            if !self.eat(',') {
                return Err(self.expected("',' or ')'"));
            }
        }
        self.depth -= 1;
        let n = match (gate, count) {
            (Gate::And, _) => rules.len(),
            (Gate::Or, _) => 1,
            (Gate::OutOf, Some((pos, n))) => match usize::try_from(n) {
                Ok(n) if n >= 1 && n <= rules.len() => n,
                _ => {
                    return Err(PolicyError::Unsatisfiable {
                        pos,
                        n,
                        rules: rules.len(),
                    })
                }
            },
            // Unreachable: OutOf always parses its count above.
            (Gate::OutOf, None) => return Err(empty),
        };
        Ok(SignaturePolicy::OutOf { n, rules })
    }

    /// A decimal count.
    fn number(&mut self) -> Result<u64, PolicyError> {
        let rest = self.rest();
        let len = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let digits = rest.get(..len).unwrap_or_default();
        if digits.is_empty() {
            return Err(self.expected("the count of OutOf (a number)"));
        }
        // A following letter would make "2x" look like a count; report the whole word.
        if leading_word(rest).len() > len {
            return Err(self.expected("the count of OutOf (a number)"));
        }
        let n = digits
            .parse::<u64>()
            .map_err(|_| self.expected(format!("a count of at most {MAX_PRINCIPALS} for OutOf")))?;
        self.pos += len;
        Ok(n)
    }

    /// A quoted principal, `quote` being next.
    fn principal(&mut self, quote: char) -> Result<Principal, PolicyError> {
        let start = self.pos;
        if self.principals >= MAX_PRINCIPALS {
            return Err(PolicyError::TooManyPrincipals {
                pos: start,
                max: MAX_PRINCIPALS,
            });
        }
        let body_start = start + quote.len_utf8();
        let body_rest = self.src.get(body_start..).unwrap_or("");
        let unterminated =
            || format!("closing {quote} of the principal opened at position {start}");
        let Some(body_len) = body_rest.find(quote) else {
            return Err(PolicyError::Syntax {
                pos: self.src.len(),
                expected: unterminated(),
                found: "end of input".to_owned(),
            });
        };
        let body = body_rest.get(..body_len).unwrap_or_default();
        self.pos = body_start + body_len + quote.len_utf8();
        self.principals += 1;
        let bad = |pos: usize, reason: &'static str| PolicyError::BadPrincipal {
            pos,
            text: format!("{quote}{body}{quote}"),
            reason,
        };
        let Some(dot) = body.rfind('.') else {
            return Err(bad(start, "expected 'MSPID.role'"));
        };
        let msp_id = body.get(..dot).unwrap_or_default();
        let role = body.get(dot + 1..).unwrap_or_default();
        if msp_id.is_empty() {
            return Err(bad(start, "the MSP id is empty"));
        }
        if let Some(off) = msp_id.find(is_forbidden_in_msp_id) {
            return Err(bad(
                body_start + off,
                "an MSP id may not contain quotes, whitespace or control characters",
            ));
        }
        let role_pos = body_start + dot + 1;
        // A role followed by anything else usually means a missing closing quote:
        // `'Org1.peer, 'Org2.peer'`.
        let role_len = leading_word(role).len();
        if role_len < role.len() {
            return Err(PolicyError::Syntax {
                pos: role_pos + role_len,
                expected: unterminated(),
                found: describe(role.get(role_len..).unwrap_or_default()),
            });
        }
        let role = PrincipalRole::from_name(role).ok_or_else(|| PolicyError::UnknownRole {
            pos: role_pos,
            role: role.to_owned(),
        })?;
        Ok(Principal {
            msp_id: msp_id.to_owned(),
            role,
        })
    }
}

/// The longest prefix of ASCII letters, digits and `_`.
fn leading_word(s: &str) -> &str {
    let len = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    s.get(..len).unwrap_or_default()
}

/// Describes the start of `rest` for an error message: a quoted word or character, or
/// `end of input`.
fn describe(rest: &str) -> String {
    const MAX_SHOWN: usize = 32;
    let word = leading_word(rest);
    if word.len() > MAX_SHOWN {
        // ASCII only, so any byte index is a char boundary.
        format!("'{}...'", word.get(..MAX_SHOWN).unwrap_or_default())
    } else if !word.is_empty() {
        format!("'{word}'")
    } else {
        match rest.chars().next() {
            None => "end of input".to_owned(),
            Some('\'') => "\"'\"".to_owned(),
            Some('"') => "'\"'".to_owned(),
            Some(c) => format!("'{}'", c.escape_debug()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::*;

    /// The error for `text`, with its position and message.
    fn err(text: &str) -> (Option<usize>, String) {
        let e = Policy::parse(text).expect_err(text);
        (e.position(), e.to_string())
    }

    fn p(msp: &str, role: PrincipalRole) -> SignaturePolicy {
        SignaturePolicy::signed_by(msp, role)
    }

    #[test]
    fn parses_the_example() {
        let text = "AND('Org1.peer', OR('Org2.member', \
                    OutOf(2, 'Org3.admin', 'Org4.peer', 'Org5.client')))";
        let want = SignaturePolicy::and(vec![
            p("Org1", PrincipalRole::Peer),
            SignaturePolicy::or(vec![
                p("Org2", PrincipalRole::Member),
                SignaturePolicy::out_of(
                    2,
                    vec![
                        p("Org3", PrincipalRole::Admin),
                        p("Org4", PrincipalRole::Peer),
                        p("Org5", PrincipalRole::Client),
                    ],
                ),
            ]),
        ]);
        assert_eq!(
            Policy::parse(text).unwrap(),
            Policy::Signature(want.clone())
        );
        assert_eq!(want.to_string(), text);
    }

    #[test]
    fn keywords_ignore_case_and_whitespace_is_free() {
        let a = Policy::parse("and('A.peer',or('B.admin',outof(1,'C.client')))").unwrap();
        let b = Policy::parse(
            " \n\tAnd ( 'A.peer' ,\r\n OR( \"B.admin\" , OUTOF ( 1 , 'C.client' ) ) ) ",
        )
        .unwrap();
        assert_eq!(a, b);
        assert_eq!(
            Policy::parse("  majority\tAdmins ").unwrap(),
            Policy::ImplicitMeta {
                rule: MetaRule::Majority,
                sub_policy: "Admins".into()
            }
        );
        assert_eq!(
            "ANY Writers".parse::<Policy>().unwrap().to_string(),
            "ANY Writers"
        );
        assert_eq!(
            Policy::parse("ALL my_sub-Policy2").unwrap().to_string(),
            "ALL my_sub-Policy2"
        );
    }

    #[test]
    fn msp_ids_may_contain_dots_and_a_bare_principal_is_a_policy() {
        let want = p("org1.example.com", PrincipalRole::Orderer);
        assert_eq!(
            Policy::parse("'org1.example.com.orderer'").unwrap(),
            Policy::Signature(want)
        );
        let sig = SignaturePolicy::parse("OR('a.b.member')").unwrap();
        assert_eq!(
            sig,
            SignaturePolicy::or(vec![p("a.b", PrincipalRole::Member)])
        );
    }

    #[test]
    fn signature_parse_rejects_implicit_meta() {
        let e = SignaturePolicy::parse("ANY Writers").unwrap_err();
        assert_eq!(e.position(), Some(0));
        assert!(e.to_string().contains("may only stand alone"), "{e}");
        let e = Policy::parse("AND(ANY Writers)").unwrap_err();
        assert_eq!(e.position(), Some(4));
        assert!(e.to_string().contains("found 'ANY'"), "{e}");
    }

    #[test]
    fn error_positions_and_messages() {
        let cases: &[(&str, usize, &str)] = &[
            ("", 0, "expected AND, OR, OutOf, a quoted principal, or ANY/ALL/MAJORITY"),
            ("   ", 3, "found end of input"),
            // missing closing quote at the end
            ("AND('Org1.peer", 14, "expected closing ' of the principal opened at position 4"),
            // missing closing quote in the middle
            ("AND('Org1.peer, 'Org2.peer')", 14, "expected closing ' of the principal opened at position 4, found ','"),
            // missing parens
            ("AND('Org1.peer'", 15, "expected ',' or ')', found end of input"),
            ("AND 'Org1.peer')", 4, "expected '(' after AND, found \"'\""),
            ("AND('Org1.peer' x)", 16, "expected ',' or ')', found 'x'"),
            ("AND('Org1.peer',)", 16, "expected AND, OR, OutOf or a quoted principal, found ')'"),
            // unknown keyword
            ("NAND('Org1.peer')", 0, "found 'NAND'"),
            ("AND('A.peer', XOR('B.peer'))", 14, "expected AND, OR, OutOf or a quoted principal, found 'XOR'"),
            ("(", 0, "found '('"),
            // unknown role
            ("AND('Org1.peer', 'Org1.boss')", 23, "unknown role 'boss'"),
            ("'Org1.Peer'", 6, "unknown role 'Peer'"),
            ("'Org1.'", 6, "unknown role ''"),
            // bad principals
            ("'Org1peer'", 0, "invalid principal 'Org1peer': expected 'MSPID.role'"),
            ("'.peer'", 0, "the MSP id is empty"),
            ("\"Or'g.peer\"", 3, "may not contain quotes"),
            ("'Org 1.peer'", 4, "may not contain quotes, whitespace"),
            // bad n
            ("OutOf(0, 'A.peer')", 6, "OutOf(0, ...) over 1 sub-rule(s) can never be satisfied; n must be between 1 and 1"),
            ("OutOf( 3 , 'A.peer', 'B.peer')", 7, "OutOf(3, ...) over 2 sub-rule(s) can never be satisfied"),
            ("OutOf(x, 'A.peer')", 6, "expected the count of OutOf (a number), found 'x'"),
            ("OutOf(2x, 'A.peer')", 6, "found '2x'"),
            ("OutOf(-1, 'A.peer')", 6, "found '-'"),
            ("OutOf(99999999999999999999999, 'A.peer')", 6, "expected a count of at most 256"),
            ("OutOf(1 'A.peer')", 8, "expected ',' after the count of OutOf, found \"'\""),
            ("OutOf(1)", 0, "OutOf needs at least one sub-rule"),
            // empty combinators
            ("AND()", 0, "AND needs at least one sub-rule"),
            ("  or( )", 2, "OR needs at least one sub-rule"),
            // trailing garbage
            ("AND('A.peer') x", 14, "unexpected 'x' after the end of the policy"),
            ("'A.peer''B.peer'", 8, "unexpected \"'\" after the end"),
            ("ANY Writers extra", 12, "unexpected 'extra' after the end"),
            ("ANY Writers.x", 11, "unexpected '.' after the end"),
            // implicit meta
            ("ANY", 3, "expected a space and a sub-policy name after ANY, found end of input"),
            ("ALL(Writers)", 3, "expected a space and a sub-policy name after ALL, found '('"),
            ("MAJORITY  ?", 10, "expected a sub-policy name (letters, digits, '_' or '-'), found '?'"),
            ("ANYWriters", 0, "found 'ANYWriters'"),
        ];
        for (text, pos, msg) in cases {
            let (got_pos, got_msg) = err(text);
            assert_eq!(got_pos, Some(*pos), "position for {text:?}: {got_msg}");
            assert!(
                got_msg.contains(msg),
                "message for {text:?}: {got_msg:?} lacks {msg:?}"
            );
            assert!(
                got_msg.starts_with(&format!("at position {pos}: ")),
                "{got_msg}"
            );
        }
    }

    #[test]
    fn exact_messages() {
        assert_eq!(
            err("AND('A.peer' x)").1,
            "at position 13: expected ',' or ')', found 'x'"
        );
        assert_eq!(
            err("'Org1.boss'").1,
            "at position 6: unknown role 'boss' in principal; \
             expected member, client, peer, orderer or admin"
        );
        assert_eq!(
            err("").1,
            "at position 0: expected AND, OR, OutOf, a quoted principal, \
             or ANY/ALL/MAJORITY <SubPolicy>, found end of input"
        );
    }

    #[test]
    fn positions_are_byte_offsets() {
        // 'é' is two bytes.
        let (pos, msg) = err("AND('é.peer' ,  ü)");
        assert_eq!(pos, Some(17), "{msg}");
        assert!(msg.ends_with("found 'ü'"), "{msg}");
    }

    #[test]
    fn nesting_is_limited_to_max_depth() {
        let nested =
            |levels: usize| format!("{}'A.peer'{}", "OR(".repeat(levels), ")".repeat(levels));
        assert!(Policy::parse(&nested(MAX_DEPTH)).is_ok());
        let e = Policy::parse(&nested(MAX_DEPTH + 1)).unwrap_err();
        assert_eq!(
            e,
            PolicyError::TooDeep {
                pos: 3 * MAX_DEPTH,
                max: MAX_DEPTH
            }
        );
        assert_eq!(
            e.to_string(),
            "at position 96: policy nested deeper than 32 levels"
        );
        // Far deeper input is rejected without recursing further (and without a stack overflow).
        let deep = "AND(".repeat(1000);
        assert!(matches!(
            Policy::parse(&deep),
            Err(PolicyError::TooDeep { pos: 128, .. })
        ));
    }

    #[test]
    fn length_and_principal_count_are_limited() {
        let long = format!("'A.peer'{}", " ".repeat(MAX_POLICY_LEN));
        assert_eq!(
            Policy::parse(&long).unwrap_err(),
            PolicyError::TooLong {
                len: MAX_POLICY_LEN + 8,
                max: MAX_POLICY_LEN
            }
        );
        let list = |count: usize| {
            let items: Vec<String> = (0..count).map(|i| format!("'{i}.peer'")).collect();
            format!("OR({})", items.join(","))
        };
        let ok = Policy::parse(&list(MAX_PRINCIPALS)).unwrap();
        let Policy::Signature(sig) = ok else {
            panic!("not a signature policy")
        };
        assert_eq!(sig.principals().count(), MAX_PRINCIPALS);
        let text = list(MAX_PRINCIPALS + 1);
        let e = Policy::parse(&text).unwrap_err();
        let pos = text.rfind('\'').unwrap() - "256.peer".len() - 1;
        assert_eq!(
            e,
            PolicyError::TooManyPrincipals {
                pos,
                max: MAX_PRINCIPALS
            }
        );
    }
}
