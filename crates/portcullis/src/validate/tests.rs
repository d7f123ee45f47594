//! The body rules of DESIGN §9, one concern per module: the strict parser, the media type,
//! the schema (and what a 422 may say), sanitizing, and the properties that tie them
//! together.

use std::sync::Arc;

use serde_json::{Value, json};

use super::*;

/// `parse_strict` at the default depth.
fn strict(body: &[u8]) -> Result<Value, StrictError> {
    parse_strict(body, JsonDepth::DEFAULT)
}

/// The problem body a refusal is rendered as, parsed back.
fn problem_json(refusal: &Refusal) -> Value {
    serde_json::from_slice(&refusal.to_problem().body(Some("req-1"))).expect("problem is JSON")
}

fn schema(value: Value) -> Arc<CompiledSchema> {
    Arc::new(CompiledSchema::from_value(&value).expect("schema compiles"))
}

mod strict_parser {
    use super::*;

    /// `depth` arrays nested in one another.
    fn arrays(depth: usize) -> String {
        "[".repeat(depth) + &"]".repeat(depth)
    }

    /// `depth` objects nested through the member `a`, with a number at the bottom.
    fn objects(depth: usize) -> String {
        r#"{"a":"#.repeat(depth) + "1" + &"}".repeat(depth)
    }

    /// Syntax and depth offsets are documented as approximate ("at or just after the
    /// offending byte", "within a byte or two"): accept the byte named in the table or the
    /// two after it. A number out of range is placed at its last digit.
    fn same_refusal(got: &StrictError, want: &StrictError) -> bool {
        let near = |got: usize, want: usize| (want..=want + 2).contains(&got);
        match (got, want) {
            (
                StrictError::Syntax { problem, at },
                StrictError::Syntax {
                    problem: want_problem,
                    at: want_at,
                },
            ) => problem == want_problem && near(*at, *want_at),
            (
                StrictError::TooDeep { max, at },
                StrictError::TooDeep {
                    max: want_max,
                    at: want_at,
                },
            ) => max == want_max && near(*at, *want_at),
            _ => got == want,
        }
    }

    #[test]
    fn refusals() {
        struct Case {
            name: &'static str,
            body: &'static [u8],
            want: StrictError,
        }
        fn syntax(problem: Syntax, at: usize) -> StrictError {
            StrictError::Syntax { problem, at }
        }
        fn escaped(code: u32, in_name: bool, pointer: &str) -> StrictError {
            StrictError::EscapedControl {
                code,
                in_name,
                pointer: pointer.to_owned(),
            }
        }
        fn duplicate(pointer: &str) -> StrictError {
            StrictError::DuplicateName {
                pointer: pointer.to_owned(),
            }
        }
        use Syntax::*;
        let cases = [
            // Nothing there.
            Case {
                name: "empty body",
                body: b"",
                want: StrictError::Empty,
            },
            Case {
                name: "only whitespace",
                body: b" \r\n\t ",
                want: StrictError::Empty,
            },
            // Encoding.
            Case {
                name: "byte order mark",
                body: b"\xEF\xBB\xBF{}",
                want: StrictError::ByteOrderMark,
            },
            Case {
                name: "invalid UTF-8 in a string",
                body: b"[\"ab\xFF\"]",
                want: StrictError::InvalidUtf8 { at: 4 },
            },
            Case {
                name: "overlong UTF-8",
                body: b"[\"\xC0\xAF\"]",
                want: StrictError::InvalidUtf8 { at: 2 },
            },
            Case {
                name: "UTF-8-encoded surrogate",
                body: b"[\"\xED\xA0\x80\"]",
                want: StrictError::InvalidUtf8 { at: 2 },
            },
            // Extensions other parsers allow.
            Case {
                name: "line comment",
                body: b"[1, // one\n2]",
                want: syntax(Comment, 4),
            },
            Case {
                name: "block comment before the value",
                body: b"/* c */ {}",
                want: syntax(Comment, 0),
            },
            Case {
                name: "comment after the value",
                body: b"{} // done",
                want: syntax(Comment, 3),
            },
            Case {
                name: "trailing comma in an array",
                body: b"[1,2,]",
                want: syntax(TrailingComma, 5),
            },
            Case {
                name: "trailing comma in an object",
                body: br#"{"a":1,}"#,
                want: syntax(TrailingComma, 7),
            },
            Case {
                name: "NaN",
                body: b"[NaN]",
                want: syntax(NonFiniteNumber, 1),
            },
            Case {
                name: "Infinity",
                body: br#"{"a":Infinity}"#,
                want: syntax(NonFiniteNumber, 5),
            },
            Case {
                name: "-Infinity",
                body: b"[-Infinity]",
                want: syntax(NonFiniteNumber, 2),
            },
            Case {
                name: "single-quoted name",
                body: b"{'a':1}",
                want: syntax(SingleQuote, 1),
            },
            Case {
                name: "single-quoted value",
                body: b"['hunter2']",
                want: syntax(SingleQuote, 1),
            },
            Case {
                name: "unquoted name",
                body: b"{a:1}",
                want: syntax(NameNotString, 1),
            },
            Case {
                name: "number as a name",
                body: b"{1:2}",
                want: syntax(NameNotString, 1),
            },
            // Strings.
            Case {
                name: "lone leading surrogate",
                body: br#"["\ud800"]"#,
                want: syntax(LoneSurrogate, 8),
            },
            Case {
                name: "lone trailing surrogate",
                body: br#"["\udc00"]"#,
                want: syntax(LoneSurrogate, 7),
            },
            Case {
                name: "leading surrogate then a non-surrogate escape",
                body: br#"["\ud800\u0041"]"#,
                want: syntax(LoneSurrogate, 13),
            },
            Case {
                name: "leading surrogate then another escape",
                body: br#"["\ud800\n"]"#,
                want: syntax(LoneSurrogate, 9),
            },
            Case {
                name: "lone surrogate in a name",
                body: br#"{"\udfff":1}"#,
                want: syntax(LoneSurrogate, 7),
            },
            Case {
                name: "unknown escape",
                body: br#"["\x41"]"#,
                want: syntax(InvalidEscape, 3),
            },
            Case {
                name: "escaped single quote",
                body: br#"["\'"]"#,
                want: syntax(InvalidEscape, 3),
            },
            Case {
                name: "short unicode escape",
                body: br#"["\u12"]"#,
                want: syntax(InvalidEscape, 6),
            },
            Case {
                name: "uppercase U escape",
                body: br#"["\U0041"]"#,
                want: syntax(InvalidEscape, 3),
            },
            Case {
                name: "raw C0 control in a value",
                body: b"[\"a\x01b\"]",
                want: syntax(ControlInString, 3),
            },
            Case {
                name: "raw tab in a value",
                body: b"[\"a\tb\"]",
                want: syntax(ControlInString, 3),
            },
            Case {
                name: "raw line feed in a name",
                body: b"{\"a\nb\":1}",
                want: syntax(ControlInString, 3),
            },
            Case {
                name: "unterminated string",
                body: br#"["abc"#,
                want: syntax(UnexpectedEnd, 5),
            },
            // Escaped controls: C0 other than \t \n \r, DEL, C1; in values and names.
            Case {
                name: "escaped NUL",
                body: br#"["\u0000"]"#,
                want: escaped(0x00, false, "/0"),
            },
            Case {
                name: "escaped SOH in a member",
                body: br#"{"a":"x\u0001y"}"#,
                want: escaped(0x01, false, "/a"),
            },
            Case {
                name: "backspace short escape",
                body: br#"{"a":["ok","\b"]}"#,
                want: escaped(0x08, false, "/a/1"),
            },
            Case {
                name: "form feed short escape",
                body: br#"["\f"]"#,
                want: escaped(0x0C, false, "/0"),
            },
            Case {
                name: "escaped vertical tab",
                body: br#"["\u000B"]"#,
                want: escaped(0x0B, false, "/0"),
            },
            Case {
                name: "escaped unit separator",
                body: br#"["\u001f"]"#,
                want: escaped(0x1F, false, "/0"),
            },
            Case {
                name: "escaped DEL",
                body: br#"{"a":{"b":"\u007f"}}"#,
                want: escaped(0x7F, false, "/a/b"),
            },
            Case {
                name: "escaped C1 (NEL)",
                body: br#"["\u0085"]"#,
                want: escaped(0x85, false, "/0"),
            },
            Case {
                name: "escaped last C1",
                body: br#"["\u009F"]"#,
                want: escaped(0x9F, false, "/0"),
            },
            Case {
                name: "escaped control at the top level",
                body: br#""\u0007""#,
                want: escaped(0x07, false, ""),
            },
            Case {
                name: "escaped control in a name",
                body: br#"{"a\u0000":1}"#,
                want: escaped(0x00, true, ""),
            },
            Case {
                name: "escaped control in a nested name",
                body: br#"{"o":[{"\u0085":1}]}"#,
                want: escaped(0x85, true, "/o/0"),
            },
            Case {
                name: "escaped DEL in a name",
                body: br#"{"\u007F":1}"#,
                want: escaped(0x7F, true, ""),
            },
            // Raw DEL and C1, wherever they are.
            Case {
                name: "raw DEL in a value",
                body: b"[\"a\x7f\"]",
                want: StrictError::RawControl { code: 0x7F, at: 3 },
            },
            Case {
                name: "raw C1 in a value",
                body: b"[\"\xC2\x85\"]",
                want: StrictError::RawControl { code: 0x85, at: 2 },
            },
            Case {
                name: "raw first C1 in a name",
                body: b"{\"\xC2\x80\":1}",
                want: StrictError::RawControl { code: 0x80, at: 2 },
            },
            Case {
                name: "raw last C1 in a name",
                body: b"{\"k\xC2\x9F\":1}",
                want: StrictError::RawControl { code: 0x9F, at: 3 },
            },
            Case {
                name: "raw DEL outside a string",
                body: b"[1,\x7f]",
                want: StrictError::RawControl { code: 0x7F, at: 3 },
            },
            // Numbers.
            Case {
                name: "1e400",
                body: b"1e400",
                want: syntax(NumberOutOfRange, 4),
            },
            Case {
                name: "-1e400 in an array",
                body: b"[-1e400]",
                want: syntax(NumberOutOfRange, 6),
            },
            Case {
                name: "huge integer digits overflowing a float",
                body: &[b'9'; 400],
                want: syntax(NumberOutOfRange, 399),
            },
            Case {
                name: "leading zero",
                body: b"[01]",
                want: syntax(InvalidNumber, 2),
            },
            Case {
                name: "fraction without digits",
                body: b"[1.]",
                want: syntax(InvalidNumber, 3),
            },
            Case {
                name: "exponent without digits",
                body: b"[1e]",
                want: syntax(InvalidNumber, 3),
            },
            Case {
                name: "leading plus",
                body: b"[+1]",
                want: syntax(UnexpectedCharacter, 1),
            },
            Case {
                name: "leading dot",
                body: b"[.5]",
                want: syntax(UnexpectedCharacter, 1),
            },
            Case {
                name: "lone minus",
                body: b"-",
                want: syntax(UnexpectedEnd, 1),
            },
            // Structure.
            Case {
                name: "data after the value",
                body: b"{} {}",
                want: syntax(TrailingData, 3),
            },
            Case {
                name: "second scalar",
                body: b"1 2",
                want: syntax(TrailingData, 2),
            },
            Case {
                name: "hex number reads as trailing data",
                body: b"0x10",
                want: syntax(TrailingData, 1),
            },
            Case {
                name: "missing comma",
                body: b"[1 2]",
                want: syntax(UnexpectedCharacter, 3),
            },
            Case {
                name: "double comma",
                body: b"[1,,2]",
                want: syntax(UnexpectedCharacter, 3),
            },
            Case {
                name: "capitalised literal",
                body: b"True",
                want: syntax(UnexpectedCharacter, 0),
            },
            Case {
                name: "truncated object",
                body: br#"{"a":"#,
                want: syntax(UnexpectedEnd, 5),
            },
            Case {
                name: "truncated literal",
                body: b"[tru",
                want: syntax(UnexpectedEnd, 4),
            },
            Case {
                name: "unclosed array",
                body: b"[1,2",
                want: syntax(UnexpectedEnd, 4),
            },
            Case {
                name: "stray closing bracket",
                body: b"]",
                want: syntax(UnexpectedCharacter, 0),
            },
            Case {
                name: "form feed is not JSON whitespace",
                body: b"\x0C{}",
                want: syntax(UnexpectedCharacter, 0),
            },
            Case {
                name: "no-break space is not JSON whitespace",
                body: b"\xC2\xA0{}",
                want: syntax(UnexpectedCharacter, 0),
            },
            // Duplicate names, compared after unescaping.
            Case {
                name: "duplicate name",
                body: br#"{"a":1,"a":2}"#,
                want: duplicate("/a"),
            },
            Case {
                name: "duplicate name spelled with an escape",
                body: br#"{"a":1,"\u0061":2}"#,
                want: duplicate("/a"),
            },
            Case {
                name: "duplicate name spelled with a surrogate pair",
                body: "{\"\u{1F600}\":1,\"\\ud83d\\ude00\":2}".as_bytes(),
                want: duplicate("/\u{1F600}"),
            },
            Case {
                name: "duplicate name with a solidus escape",
                body: br#"{"a/b":1,"a\/b":2}"#,
                want: duplicate("/a~1b"),
            },
            Case {
                name: "duplicate name needing pointer escapes",
                body: br#"{"x":{"~/":1,"~/":2}}"#,
                want: duplicate("/x/~0~1"),
            },
            Case {
                name: "duplicate empty name",
                body: br#"{"":1,"":2}"#,
                want: duplicate("/"),
            },
            Case {
                name: "duplicate name deep in arrays",
                body: br#"{"items":[{},{"k":1,"j":2,"k":3}]}"#,
                want: duplicate("/items/1/k"),
            },
            Case {
                name: "duplicate name whose first value was an object",
                body: br#"{"a":{"b":1},"a":2}"#,
                want: duplicate("/a"),
            },
            // Depth.
            Case {
                name: "one level too deep",
                body: b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
                want: StrictError::TooDeep { max: 32, at: 32 },
            },
        ];
        let mut wrong = Vec::new();
        for case in cases {
            let got = strict(case.body);
            match got {
                Err(ref e) if same_refusal(e, &case.want) => {}
                other => {
                    wrong.push(format!(
                        "{}: expected {:?}, got {other:?}",
                        case.name, case.want
                    ));
                    continue;
                }
            }
            // Every refusal is a 400 whose detail says where.
            let refusal = Refusal::from(got.unwrap_err());
            assert_eq!(refusal.status(), 400, "{}", case.name);
            assert_eq!(refusal.kind(), crate::ProblemKind::InvalidBody);
            let detail = refusal.to_string();
            assert!(
                [
                    " at byte ",
                    " at /",
                    " at the top level",
                    "empty",
                    "byte order mark"
                ]
                .iter()
                .any(|place| detail.contains(place)),
                "{}: the detail {detail:?} says where",
                case.name
            );
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn details_name_the_problem_and_the_place() {
        let detail = |body: &[u8]| strict(body).unwrap_err().to_string();
        assert_eq!(detail(b""), "the body is empty");
        assert_eq!(
            detail(b"\xEF\xBB\xBF1"),
            "the body starts with a byte order mark"
        );
        assert_eq!(detail(b"[\"\xFF\"]"), "invalid UTF-8 at byte 2");
        assert_eq!(detail(b"[1,]"), "invalid JSON: a trailing comma at byte 3");
        assert_eq!(detail(b"[NaN]"), "invalid JSON: NaN or Infinity at byte 1");
        assert_eq!(
            detail(b"1e400"),
            "invalid JSON: a number out of range at byte 4"
        );
        assert_eq!(detail(br#"{"a":{"b":1,"b":2}}"#), "duplicate name at /a/b");
        assert_eq!(detail(br#"{"":1,"":2}"#), "duplicate name at /");
        assert_eq!(
            detail(br#"{"a":"\u0085"}"#),
            "control character U+0085 in the string at /a"
        );
        assert_eq!(
            detail(br#"{"\u0001":1}"#),
            "control character U+0001 in a name of the object at the top level"
        );
        assert_eq!(detail(b"[\"\x7f\"]"), "control character U+007F at byte 2");
        // The 33rd `[` is byte 32; the refusal is placed within a byte of it.
        assert!(
            detail(arrays(33).as_bytes()).starts_with("nesting deeper than 32 levels at byte 3")
        );
    }

    #[test]
    fn details_never_quote_the_body() {
        let bodies: [&[u8]; 10] = [
            br#"{"pw":"hunter2-SECRET","pw":1}"#,
            br#"["hunter2-SECRET" "x"]"#,
            br#"["hunter2-SECRET", NaN]"#,
            br#"["hunter2-SECRET\x"]"#,
            br#"["hunter2-SECRET\u0001"]"#,
            b"[\"hunter2-SECRET\x7f\"]",
            b"[\"hunter2-SECRET\x01\"]",
            br#"{"a":"hunter2-SECRET"} hunter2-SECRET"#,
            b"hunter2-SECRET",
            br#"['hunter2-SECRET']"#,
        ];
        for body in bodies {
            let refusal = Refusal::from(strict(body).unwrap_err());
            let rendered = refusal.to_problem().body(Some("req-1"));
            assert!(
                !String::from_utf8_lossy(&rendered).contains("hunter2"),
                "{rendered:?}"
            );
            assert!(!format!("{refusal:?}").contains("hunter2"));
        }
    }

    #[test]
    fn accepted_edge_cases() {
        let cases: [(&str, &[u8], Value); 31] = [
            ("zero", b"0", json!(0)),
            ("negative zero is a float", b"-0", json!(-0.0)),
            ("true", b"true", json!(true)),
            ("null", b" null ", Value::Null),
            ("top-level string", br#""s""#, json!("s")),
            ("top-level number with exponent", b"1.5E+2", json!(150.0)),
            ("empty array", b"[]", json!([])),
            ("empty object", b"{}", json!({})),
            (
                "all JSON whitespace",
                b" \t\r\n[ 1 ,\t2 ]\r\n",
                json!([1, 2]),
            ),
            (
                "escaped tab, line feed, carriage return",
                br#"{"t\tn\n":"a\tb\nc\rd"}"#,
                json!({"t\tn\n": "a\tb\nc\rd"}),
            ),
            (
                "the other short escapes",
                br#"["\"\\\/"]"#,
                json!(["\"\\/"]),
            ),
            (
                "escaped tab as \\u0009",
                br#"["\u0009\u000A\u000d"]"#,
                json!(["\t\n\r"]),
            ),
            (
                "surrogate pair",
                br#"["\ud83d\ude00"]"#,
                json!(["\u{1F600}"]),
            ),
            (
                "surrogate pair in a name",
                br#"{"\uD83D\uDE00":1}"#,
                json!({"\u{1F600}": 1}),
            ),
            (
                "raw four-byte UTF-8",
                "[\"\u{1F600}\"]".as_bytes(),
                json!(["\u{1F600}"]),
            ),
            (
                "first code point after C1",
                br#"["\u00a0"]"#,
                json!(["\u{A0}"]),
            ),
            ("raw no-break space", b"[\"\xC2\xA0\"]", json!(["\u{A0}"])),
            (
                "U+2028 raw",
                "[\"\u{2028}\"]".as_bytes(),
                json!(["\u{2028}"]),
            ),
            ("U+2028 escaped", br#"["\u2028"]"#, json!(["\u{2028}"])),
            ("noncharacter", br#"["\uFFFF"]"#, json!(["\u{FFFF}"])),
            ("last printable ASCII", br#"["~\u007e"]"#, json!(["~~"])),
            ("1e308", b"1e308", json!(1e308)),
            ("-1e308", b"[-1e308]", json!([-1e308])),
            ("largest float", b"1.7976931348623157e308", json!(f64::MAX)),
            ("smallest subnormal", b"5e-324", json!(5e-324)),
            ("underflow becomes zero", b"1e-400", json!(0.0)),
            ("u64::MAX", b"18446744073709551615", json!(u64::MAX)),
            ("i64::MIN", b"-9223372036854775808", json!(i64::MIN)),
            (
                "beyond 64 bits becomes a float",
                b"123456789012345678901234567890",
                json!(1.2345678901234568e29),
            ),
            (
                "same name in sibling objects",
                br#"[{"a":1},{"a":2}]"#,
                json!([{"a": 1}, {"a": 2}]),
            ),
            (
                "names differing only in case",
                br#"{"a":1,"A":2}"#,
                json!({"a": 1, "A": 2}),
            ),
        ];
        for (name, body, want) in cases {
            assert_eq!(strict(body).as_ref(), Ok(&want), "{name}");
            // Whatever we accept, serde_json reads the same way.
            let lax: Value = serde_json::from_slice(body).unwrap();
            assert_eq!(lax, want, "{name}");
        }
    }

    #[test]
    fn depth_limit_is_exact_for_arrays_objects_and_mixes() {
        let depth = JsonDepth::DEFAULT.get() as usize;
        assert_eq!(depth, 32);
        assert!(strict(arrays(depth).as_bytes()).is_ok());
        assert!(matches!(
            strict(arrays(depth + 1).as_bytes()),
            Err(StrictError::TooDeep { max: 32, .. })
        ));
        assert!(strict(objects(depth).as_bytes()).is_ok());
        assert!(matches!(
            strict(objects(depth + 1).as_bytes()),
            Err(StrictError::TooDeep { max: 32, .. })
        ));
        let mixed = |levels: usize| r#"{"a":["#.repeat(levels) + &"]}".repeat(levels);
        assert!(strict(mixed(depth / 2).as_bytes()).is_ok());
        assert!(matches!(
            strict(format!("[{}]", mixed(depth / 2)).as_bytes()),
            Err(StrictError::TooDeep { .. })
        ));
        // Depth is nesting, not the number of containers.
        let wide = format!("[{}]", vec![arrays(depth - 1); 100].join(","));
        assert!(strict(wide.as_bytes()).is_ok());
    }

    #[test]
    fn depth_bounds() {
        assert_eq!(JsonDepth::new(0), None);
        assert_eq!(JsonDepth::new(1).map(JsonDepth::get), Some(1));
        assert_eq!(JsonDepth::new(127), Some(JsonDepth::MAX));
        assert_eq!(JsonDepth::new(128), None);
        assert_eq!(JsonDepth::new(u32::MAX), None);
        assert_eq!(JsonDepth::default(), JsonDepth::DEFAULT);

        let one = JsonDepth::new(1).unwrap();
        assert!(parse_strict(b"\"scalar\"", one).is_ok());
        assert!(parse_strict(br#"{"a":1}"#, one).is_ok());
        assert!(matches!(
            parse_strict(b"[[]]", one),
            Err(StrictError::TooDeep { max: 1, at: 1..=3 })
        ));

        // At the maximum serde_json's own recursion limit sits just above ours.
        let max = JsonDepth::MAX.get() as usize;
        assert!(parse_strict(arrays(max).as_bytes(), JsonDepth::MAX).is_ok());
        assert!(parse_strict(objects(max).as_bytes(), JsonDepth::MAX).is_ok());
        for too_deep in [arrays(max + 1), objects(max + 1)] {
            assert!(matches!(
                parse_strict(too_deep.as_bytes(), JsonDepth::MAX),
                Err(StrictError::TooDeep { max: 127, .. })
            ));
        }
    }

    #[test]
    fn nesting_bomb_stops_at_the_first_level_too_many() {
        // Run on a small stack: a parse that recursed per level would overflow it.
        let bombs = [
            "[".repeat(100_000),
            arrays(100_000),
            r#"{"a":"#.repeat(100_000),
            r#"[{"a":"#.repeat(50_000),
        ];
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                for bomb in bombs {
                    for depth in [JsonDepth::DEFAULT, JsonDepth::MAX] {
                        match parse_strict(bomb.as_bytes(), depth) {
                            Err(StrictError::TooDeep { max, at }) => {
                                assert_eq!(max, depth.get());
                                assert!(at < 10 * max as usize, "stopped at byte {at}");
                            }
                            other => panic!("expected TooDeep, got {other:?}"),
                        }
                    }
                }
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn big_objects_and_long_strings() {
        let members: Vec<String> = (0..10_000).map(|i| format!(r#""k{i}":{i}"#)).collect();
        let body = format!("{{{}}}", members.join(","));
        let value = strict(body.as_bytes()).unwrap();
        assert_eq!(value.as_object().unwrap().len(), 10_000);

        let dup = format!(r#"{{{},"k9999":0}}"#, members.join(","));
        assert_eq!(
            strict(dup.as_bytes()),
            Err(StrictError::DuplicateName {
                pointer: "/k9999".into()
            })
        );

        let long = format!(r#"["{}"]"#, "é\\n".repeat(100_000));
        assert!(strict(long.as_bytes()).is_ok());
    }

    #[test]
    fn offsets_count_bytes_across_lines() {
        let body = b"{\n  \"a\": 1,\n  \"b\": [1, 2,]\n}";
        let at = body.iter().position(|&b| b == b']').unwrap();
        assert_eq!(
            strict(body),
            Err(StrictError::Syntax {
                problem: Syntax::TrailingComma,
                at
            })
        );
        let body = "{\"é\": 1,\n\"ü\": NaN}".as_bytes();
        let at = body.iter().position(|&b| b == b'N').unwrap();
        assert_eq!(
            strict(body),
            Err(StrictError::Syntax {
                problem: Syntax::NonFiniteNumber,
                at
            })
        );
    }
}

mod media_type {
    use http::HeaderMap;
    use http::header::CONTENT_TYPE;

    use super::*;
    use crate::validate::media_type::check_media_type;

    #[test]
    fn table() {
        use MediaTypeError::*;
        let cases: &[(&str, Result<(), MediaTypeError>)] = &[
            ("application/json", Ok(())),
            ("APPLICATION/JSON", Ok(())),
            ("Application/Json", Ok(())),
            ("application/problem+json", Ok(())),
            ("application/vnd.api+json", Ok(())),
            ("application/merge-patch+JSON", Ok(())),
            ("application/json; charset=UTF-8", Ok(())),
            ("application/json;charset=utf-8", Ok(())),
            ("application/json; charset=\"utf-8\"", Ok(())),
            ("application/json; charset=\"UTF-8\"", Ok(())),
            ("application/json; charset=\"utf\\-8\"", Ok(())),
            ("application/json ;charset=utf-8", Ok(())),
            ("application/json \t; \tcharset=utf-8 \t", Ok(())),
            ("application/json;", Ok(())),
            ("application/json; ", Ok(())),
            ("application/json;;charset=utf-8;;", Ok(())),
            ("application/json; charset=utf-8;", Ok(())),
            ("application/json; v=1; charset=utf-8", Ok(())),
            ("application/json; profile=\"a;b \\\"c\\\"\"", Ok(())),
            (" application/json ", Ok(())),
            // Other charsets, or one too many.
            ("application/json; charset=latin1", Err(Charset)),
            ("application/json; charset=\"latin1\"", Err(Charset)),
            ("application/json; charset=utf8", Err(Charset)),
            ("application/json; charset=utf-16", Err(Charset)),
            ("application/json; CHARSET=iso-8859-1", Err(Charset)),
            ("application/json; charset=\"\"", Err(Charset)),
            (
                "application/json; charset=utf-8; charset=utf-8",
                Err(Charset),
            ),
            (
                "application/json; charset=utf-8; charset=latin1",
                Err(Charset),
            ),
            // Not JSON.
            ("text/plain", Err(NotJson)),
            ("text/json", Err(NotJson)),
            ("text/plain; charset=utf-8", Err(NotJson)),
            ("application/jsonx", Err(NotJson)),
            ("application/x-json", Err(NotJson)),
            ("application/json-patch", Err(NotJson)),
            ("application/json+xml", Err(NotJson)),
            ("application/+json", Err(NotJson)),
            ("application/x-www-form-urlencoded", Err(NotJson)),
            ("multipart/form-data; boundary=x", Err(NotJson)),
            ("json/application", Err(NotJson)),
            ("*/*", Err(NotJson)),
            ("application/*", Err(NotJson)),
            // Malformed.
            ("", Err(Malformed)),
            ("application", Err(Malformed)),
            ("application/", Err(Malformed)),
            ("/json", Err(Malformed)),
            ("application /json", Err(Malformed)),
            ("application/ json", Err(Malformed)),
            ("application/json charset=utf-8", Err(Malformed)),
            ("application/json; charset", Err(Malformed)),
            ("application/json; charset=", Err(Malformed)),
            ("application/json; charset = utf-8", Err(Malformed)),
            ("application/json; charset=\"utf-8", Err(Malformed)),
            ("application/json; charset=utf-8 x", Err(Malformed)),
            ("application/json; =utf-8", Err(Malformed)),
            ("application/json; a=b=c", Err(Malformed)),
            ("application/json/x", Err(Malformed)),
        ];
        for (value, want) in cases {
            assert_eq!(check_media_type(value.as_bytes()), *want, "{value:?}");
        }
        assert_eq!(
            check_media_type("application/jsön".as_bytes()),
            Err(Malformed)
        );
        assert_eq!(check_media_type(b"application/json\xFF"), Err(Malformed));
    }

    #[test]
    fn through_the_header_map() {
        let check = |values: &[&'static str]| {
            let mut headers = HeaderMap::new();
            for v in values {
                headers.append(CONTENT_TYPE, http::HeaderValue::from_static(v));
            }
            check_content_type(&headers)
        };
        assert_eq!(check(&["application/json; charset=utf-8"]), Ok(()));
        for (values, want) in [
            (&[][..], MediaTypeError::Missing),
            (&["text/plain"][..], MediaTypeError::NotJson),
            (
                &["application/json; charset=latin1"][..],
                MediaTypeError::Charset,
            ),
            (
                &["application/json", "application/json"][..],
                MediaTypeError::Several,
            ),
        ] {
            let refusal = check(values).unwrap_err();
            assert_eq!(refusal, Refusal::MediaType(want), "{values:?}");
            assert_eq!(refusal.status(), 415);
            assert_eq!(refusal.kind(), crate::ProblemKind::UnsupportedMediaType);
            let body = problem_json(&refusal);
            assert_eq!(body["status"], 415);
            assert_eq!(body["detail"], want.to_string());
        }
        // A value that is not visible ASCII never reaches the parser as text.
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            http::HeaderValue::from_bytes(b"application/json; x=\xE9").unwrap(),
        );
        assert_eq!(
            check_content_type(&headers),
            Err(Refusal::MediaType(MediaTypeError::Malformed))
        );
    }

    #[test]
    fn details_never_repeat_the_header() {
        let value = "application/json; charset=hunter2";
        let err = check_media_type(value.as_bytes()).unwrap_err();
        let body = Refusal::from(err).to_problem().body(None);
        assert!(!String::from_utf8_lossy(&body).contains("hunter2"));
    }
}

mod schema_rules {
    use super::*;

    fn order_schema() -> Arc<CompiledSchema> {
        schema(json!({
            "$schema": DRAFT_2020_12,
            "type": "object",
            "properties": {
                "qty": { "type": "integer", "minimum": 1, "maximum": 10 },
                "email": { "type": "string", "format": "email" },
                "code": { "type": "string", "pattern": "^[A-Z]{3}$" },
                "note": { "type": "string", "maxLength": 5 },
                "colour": { "enum": ["red", "green"] },
                "tags": {
                    "type": "array",
                    "items": { "type": "string" },
                    "maxItems": 2,
                    "uniqueItems": true
                },
                "address": {
                    "type": "object",
                    "properties": { "city": { "type": "string", "minLength": 1 } },
                    "required": ["city"]
                }
            },
            "required": ["qty"],
            "additionalProperties": false
        }))
    }

    /// The `(pointer, reason)` pairs a body fails with.
    fn violations(schema: &CompiledSchema, body: &[u8]) -> Vec<(String, String)> {
        let value = strict(body).unwrap();
        schema
            .check(&value)
            .unwrap_err()
            .errors
            .into_iter()
            .map(|v| (v.pointer, v.reason))
            .collect()
    }

    #[test]
    fn pointers_and_reasons() {
        let schema = order_schema();
        let got = violations(
            &schema,
            br#"{
                "qty": 0,
                "email": "not-an-email",
                "code": "abc",
                "note": "far too long",
                "colour": "blue",
                "tags": ["a", 2, "a"],
                "address": { "zip": 1 },
                "extra/field~": true
            }"#,
        );
        let want = [
            ("/address", "required property \"city\" missing"),
            ("/code", "does not match pattern \"^[A-Z]{3}$\""),
            ("/colour", "not one of the allowed values"),
            ("/email", "not a valid \"email\""),
            ("/extra~1field~0", "additional property not allowed"),
            ("/note", "string longer than 5"),
            ("/qty", "below minimum 1"),
            ("/tags", "array items are not unique"),
            ("/tags", "more than 2 items"),
            ("/tags/1", "expected type string"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(p, r)| (p.to_string(), r.to_string()))
            .collect();
        assert_eq!(got, want);

        assert_eq!(
            violations(&schema, b"[]"),
            [("".to_owned(), "expected type object".to_owned())]
        );
        assert_eq!(
            violations(&schema, b"{}"),
            [(
                "".to_owned(),
                "required property \"qty\" missing".to_owned()
            )]
        );
        assert_eq!(
            violations(&schema, br#"{"qty":11}"#),
            [("/qty".to_owned(), "above maximum 10".to_owned())]
        );
        assert_eq!(
            violations(&schema, br#"{"qty":1.5}"#),
            [("/qty".to_owned(), "expected type integer".to_owned())]
        );
        assert!(schema.check(&json!({"qty": 3, "tags": ["a"]})).is_ok());
    }

    #[test]
    fn unique_items_and_combinators() {
        let s = schema(json!({
            "type": "object",
            "properties": {
                "u": { "uniqueItems": true },
                "one": { "oneOf": [{ "type": "string" }, { "minLength": 1 }] },
                "any": { "anyOf": [{ "type": "integer" }, { "type": "boolean" }] },
                "not": { "not": { "type": "string" } },
                "c": { "const": 1 },
                "types": { "type": ["integer", "null"] },
                "never": false
            }
        }));
        let got = violations(
            &s,
            br#"{"u":[1,1],"one":"x","any":"x","not":"x","c":2,"types":"x","never":1}"#,
        );
        let reasons: Vec<&str> = got.iter().map(|(_, r)| r.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "does not match any of the anyOf schemas",
                "not the required constant value",
                "no value is allowed here",
                "matches a schema it must not match",
                "matches more than one of the oneOf schemas",
                "expected one of the types null, integer",
                "array items are not unique",
            ]
        );
    }

    #[test]
    fn a_submitted_secret_never_appears_in_the_problem() {
        const SECRET: &str = "hunter2-SECRET";
        let s = schema(json!({
            "type": "object",
            "properties": {
                "enum": { "enum": ["a", "b"] },
                "const": { "const": "a" },
                "pattern": { "pattern": "^[0-9]+$" },
                "format": { "format": "email" },
                "type": { "type": "integer" },
                "max": { "maxLength": 3 },
                "min": { "minLength": 64 },
                "one": { "oneOf": [{ "type": "integer" }, { "type": "boolean" }] },
                "any": { "anyOf": [{ "type": "integer" }, { "type": "boolean" }] },
                "not": { "not": { "type": "string" } },
                "unique": { "uniqueItems": true },
                "contains": { "contains": { "type": "integer" } },
                "nested": { "items": { "enum": [1] } },
                "false": false,
                "ip": { "format": "ipv4" },
                "date": { "format": "date" },
                "uri": { "format": "uri" },
                "b64": { "contentEncoding": "base64" }
            },
            "patternProperties": { "^x-": { "type": "integer" } },
            "required": ["absent"],
            "additionalProperties": false
        }));
        let value = json!({
            "enum": SECRET, "const": SECRET, "pattern": SECRET, "format": SECRET,
            "type": SECRET, "max": SECRET, "min": SECRET, "one": SECRET, "any": SECRET,
            "not": SECRET, "unique": [SECRET, SECRET], "contains": [SECRET],
            "nested": [SECRET], "false": SECRET, "ip": SECRET, "date": SECRET,
            "uri": SECRET, "b64": SECRET, "x-1": SECRET, "other": SECRET
        });
        let body = serde_json::to_vec(&value).unwrap();
        let rules = BodyRules::new().with_schema(s);
        let refusal = validate(&body, &rules).unwrap_err();
        assert_eq!(refusal.status(), 422);
        let Refusal::Schema(ref found) = refusal else {
            panic!("expected a schema refusal, got {refusal:?}");
        };
        // Every property failed, and none of the reports quotes the value.
        assert!(found.errors.len() >= 19, "{found:#?}");
        let rendered =
            String::from_utf8(refusal.to_problem().body(Some("req-1")).to_vec()).unwrap();
        assert!(!rendered.contains("hunter2"), "{rendered}");
        assert!(!refusal.to_string().contains("hunter2"));
        assert!(!format!("{refusal:?}").contains("hunter2"));
    }

    #[test]
    fn reports_are_capped() {
        let s = schema(json!({ "type": "array", "items": { "type": "integer" } }));
        let items = vec![json!("x"); MAX_REPORTED + 70];
        let body = serde_json::to_vec(&items).unwrap();
        let refusal = validate(&body, &BodyRules::new().with_schema(s.clone())).unwrap_err();
        let Refusal::Schema(ref v) = refusal else {
            panic!("{refusal:?}");
        };
        assert_eq!(v.errors.len(), MAX_REPORTED);
        assert_eq!(v.more, 70);
        assert_eq!(
            refusal.to_string(),
            format!(
                "the body does not match the schema in {} places",
                MAX_REPORTED + 70
            )
        );
        let problem = problem_json(&refusal);
        assert_eq!(problem["status"], 422);
        assert_eq!(problem["errors"].as_array().unwrap().len(), MAX_REPORTED);
        assert_eq!(problem["more_errors"], 70);
        assert_eq!(
            problem["errors"][0],
            json!({"pointer": "/0", "reason": "expected type integer"})
        );

        // Exactly at the cap: everything listed, no `more_errors`.
        let body = serde_json::to_vec(&vec![json!("x"); MAX_REPORTED]).unwrap();
        let refusal = validate(&body, &BodyRules::new().with_schema(s)).unwrap_err();
        let problem = problem_json(&refusal);
        assert_eq!(problem["errors"].as_array().unwrap().len(), MAX_REPORTED);
        assert!(problem.get("more_errors").is_none());
    }

    #[test]
    fn one_violation_per_unexpected_property() {
        let additional = |names: &[&str]| -> Vec<(String, String)> {
            names
                .iter()
                .map(|n| (n.to_string(), "additional property not allowed".to_owned()))
                .collect()
        };
        // Each spelling of "no other members" names every unexpected member. Without
        // `properties`, jsonschema reports a false schema at the object instead: see
        // `additional_members` in schema.rs.
        for schema_value in [
            json!({ "type": "object", "additionalProperties": false }),
            json!({ "properties": {}, "additionalProperties": false }),
            json!({ "properties": { "z": {} }, "additionalProperties": false }),
            json!({ "required": ["b"], "additionalProperties": false }),
            json!({ "patternProperties": { "^z": {} }, "additionalProperties": false }),
        ] {
            let s = schema(schema_value.clone());
            assert_eq!(
                violations(&s, br#"{"b":1,"a":2,"c/d":3}"#),
                additional(&["/a", "/b", "/c~1d"]),
                "{schema_value}"
            );
        }
        let nested = schema(json!({
            "properties": { "o": { "additionalProperties": false } }
        }));
        assert_eq!(
            violations(&nested, br#"{"o":{"x":{"y":1}}}"#),
            additional(&["/o/x"])
        );
        let s = schema(json!({ "unevaluatedProperties": false }));
        assert_eq!(
            violations(&s, br#"{"b":1,"a":2}"#),
            [
                (
                    "/a".to_owned(),
                    "unevaluated property not allowed".to_owned()
                ),
                (
                    "/b".to_owned(),
                    "unevaluated property not allowed".to_owned()
                ),
            ]
        );
        // A real `false` schema at a member that happens to be named like the keyword.
        let s = schema(json!({ "properties": { "additionalProperties": false } }));
        assert_eq!(
            violations(&s, br#"{"additionalProperties":{"x":1}}"#),
            [(
                "/additionalProperties".to_owned(),
                "no value is allowed here".to_owned()
            )]
        );
        let s = schema(json!({ "items": false }));
        assert_eq!(
            violations(&s, b"[1]"),
            [("/0".to_owned(), "no value is allowed here".to_owned())]
        );
    }

    #[test]
    fn local_references_resolve() {
        let s = schema(json!({
            "$defs": { "positive": { "type": "integer", "minimum": 1 } },
            "type": "object",
            "properties": { "n": { "$ref": "#/$defs/positive" } }
        }));
        assert!(s.check(&json!({"n": 3})).is_ok());
        assert_eq!(
            violations(&s, br#"{"n":0}"#),
            [("/n".to_owned(), "below minimum 1".to_owned())]
        );
    }

    #[test]
    fn unusable_schemas_are_refused_at_compile_time() {
        let cases = [
            (
                "remote $ref",
                json!({ "$ref": "https://schemas.example.invalid/order.json" }),
                "schemas.example.invalid",
            ),
            (
                "remote $ref in a property",
                json!({ "properties": { "a": { "$ref": "http://example.invalid/a.json#/x" } } }),
                "example.invalid",
            ),
            (
                "file $ref",
                json!({ "$ref": "file:///etc/passwd" }),
                "/etc/passwd",
            ),
            (
                "relative $ref",
                json!({ "$ref": "other.json" }),
                "other.json",
            ),
            (
                "dangling local $ref",
                json!({ "$ref": "#/$defs/missing" }),
                "missing",
            ),
            (
                "another draft",
                json!({ "$schema": "http://json-schema.org/draft-07/schema#" }),
                "Draft 2020-12",
            ),
            (
                "$schema not a string",
                json!({ "$schema": 7 }),
                "Draft 2020-12",
            ),
            (
                "unknown type",
                json!({ "type": "integr" }),
                "not a usable Draft 2020-12 schema",
            ),
            (
                "minimum not a number",
                json!({ "properties": { "a": { "minimum": "one" } } }),
                "not a usable Draft 2020-12 schema",
            ),
            ("unknown format", json!({ "format": "emial" }), "emial"),
            (
                "look-around in a pattern",
                json!({ "pattern": "^(?=a)a$" }),
                "not a usable Draft 2020-12 schema",
            ),
            (
                "back-reference in a pattern",
                json!({ "pattern": "^(a)\\1$" }),
                "not a usable Draft 2020-12 schema",
            ),
        ];
        for (name, value, mentions) in cases {
            match CompiledSchema::from_value(&value) {
                Err(e @ SchemaError::Invalid { .. }) => {
                    let message = e.to_string();
                    assert!(message.starts_with("inline schema: "), "{name}: {message}");
                    assert!(message.contains(mentions), "{name}: {message}");
                }
                other => panic!("{name}: expected SchemaError::Invalid, got {other:?}"),
            }
        }
        // The draft check allows the canonical URI with an empty fragment.
        let with_fragment = format!("{DRAFT_2020_12}#");
        assert!(CompiledSchema::from_value(&json!({ "$schema": with_fragment })).is_ok());
    }

    #[test]
    fn schema_files() {
        let dir = std::env::temp_dir().join(format!("portcullis-validate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();

        let good = dir.join("good.json");
        std::fs::write(&good, br#"{"type":"object","required":["a"]}"#).unwrap();
        let s = CompiledSchema::from_file(&good).unwrap();
        assert_eq!(s.origin(), good.display().to_string());
        assert!(format!("{s:?}").contains("good.json"));
        assert!(s.check(&json!({"a": 1})).is_ok());

        // The same strict rules as bodies: a duplicate name is an error, not a silent pick.
        let dup = dir.join("dup.json");
        std::fs::write(&dup, br#"{"type":"object","type":"array"}"#).unwrap();
        match CompiledSchema::from_file(&dup) {
            Err(e @ SchemaError::Json { .. }) => {
                let message = e.to_string();
                assert!(message.contains("dup.json"), "{message}");
                assert!(message.contains("duplicate name at /type"), "{message}");
            }
            other => panic!("expected SchemaError::Json, got {other:?}"),
        }

        let remote = dir.join("remote.json");
        std::fs::write(&remote, br#"{"$ref":"https://example.invalid/s.json"}"#).unwrap();
        match CompiledSchema::from_file(&remote) {
            Err(e @ SchemaError::Invalid { .. }) => {
                assert!(e.to_string().contains("remote.json"), "{e}");
            }
            other => panic!("expected SchemaError::Invalid, got {other:?}"),
        }

        let missing = dir.join("missing.json");
        match CompiledSchema::from_file(&missing) {
            Err(e @ SchemaError::Read { .. }) => {
                assert!(e.to_string().contains("missing.json"), "{e}");
            }
            other => panic!("expected SchemaError::Read, got {other:?}"),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn strict_parsing_comes_before_the_schema() {
        let s = schema(json!({ "type": "object", "required": ["qty"] }));
        let rules = BodyRules::new().with_schema(s);
        // Both malformed and schema-invalid: the 400 wins.
        let refusal = validate(br#"{"x":1,"x":2}"#, &rules).unwrap_err();
        assert_eq!(refusal.status(), 400);
        let refusal = validate(br#"{"x":1}"#, &rules).unwrap_err();
        assert_eq!(refusal.status(), 422);
        let problem = problem_json(&refusal);
        assert_eq!(
            problem["type"],
            crate::ProblemKind::InvalidBody.type_uri().as_ref()
        );
        assert_eq!(
            problem["detail"],
            "the body does not match the schema of this route"
        );
        assert_eq!(problem["request_id"], "req-1");
        assert_eq!(
            problem["errors"],
            json!([{"pointer": "", "reason": "required property \"qty\" missing"}])
        );
        assert_eq!(validate(br#"{"qty":1}"#, &rules), Ok(Validated::Original));
    }

    #[test]
    fn depth_of_the_rules_applies() {
        let rules = BodyRules::new().max_depth(JsonDepth::new(2).unwrap());
        assert_eq!(validate(b"[[1]]", &rules), Ok(Validated::Original));
        let refusal = validate(b"[[[1]]]", &rules).unwrap_err();
        assert!(matches!(
            refusal,
            Refusal::Json(StrictError::TooDeep { max: 2, .. })
        ));
    }
}

#[cfg(feature = "sanitize-html")]
mod sanitizing {
    use super::*;

    fn rules(paths: &[&str]) -> BodyRules {
        paths.iter().fold(BodyRules::new(), |rules, p| {
            rules.add_sanitize_html(FieldPath::parse(p).unwrap())
        })
    }

    /// The sanitized body, checked to be strict JSON.
    fn sanitized(body: &str, paths: &[&str]) -> String {
        match validate(body.as_bytes(), &rules(paths)) {
            Ok(Validated::Sanitized(out)) => {
                let text = String::from_utf8(out.to_vec()).unwrap();
                if let Err(e) = strict(text.as_bytes()) {
                    panic!("sanitized body {text:?} is not strict JSON: {e}");
                }
                text
            }
            other => panic!("{body}: expected a sanitized body, got {other:?}"),
        }
    }

    fn untouched(body: &str, paths: &[&str]) {
        assert_eq!(
            validate(body.as_bytes(), &rules(paths)),
            Ok(Validated::Original),
            "{body}"
        );
    }

    #[test]
    fn script_is_removed_from_a_named_field_only() {
        let body = r#"{"comment":"hi<script>alert(1)</script>!","other":"<script>x</script>"}"#;
        assert_eq!(
            sanitized(body, &["comment"]),
            r#"{"comment":"hi!","other":"<script>x</script>"}"#
        );
        // Event handlers and javascript: URLs go; allowed markup stays.
        let body = r#"{"c":"<b onclick=\"x()\">b</b><a href=\"javascript:x()\">l</a><img src=x onerror=alert(1)>"}"#;
        assert_eq!(
            sanitized(body, &["c"]),
            r#"{"c":"<b>b</b><a rel=\"noopener noreferrer\">l</a><img src=\"x\">"}"#
        );
    }

    #[test]
    fn only_changed_strings_are_rewritten() {
        // Odd spacing, number spellings, escapes and key order elsewhere survive byte for byte.
        let body = "{ \"n\" : 1.0E+2 ,\"z\":\"\\u00e9\\/\",\n\t\"c\" :\"<i>a</i><script>x</script>\" , \"a\":[ -0 ,true,null ] }";
        let want = "{ \"n\" : 1.0E+2 ,\"z\":\"\\u00e9\\/\",\n\t\"c\" :\"<i>a</i>\" , \"a\":[ -0 ,true,null ] }";
        assert_eq!(sanitized(body, &["c"]), want);
    }

    #[test]
    fn nested_index_and_wildcard_paths() {
        let x = "<script>x</script>";
        let body = json!({
            "author": { "bio": format!("a{x}"), "name": format!("n{x}") },
            "items": [ { "text": format!("0{x}") }, { "text": format!("1{x}") } ],
            "labels": { "en": format!("e{x}"), "fr": format!("f{x}") },
            "a/b": { "~": format!("s{x}") },
            "rows": [[format!("r{x}")]],
        })
        .to_string();
        let clean =
            |paths: &[&str]| -> Value { serde_json::from_str(&sanitized(&body, paths)).unwrap() };

        let out = clean(&["author/bio"]);
        assert_eq!(out["author"]["bio"], "a");
        assert_eq!(out["author"]["name"], format!("n{x}"));

        let out = clean(&["/items/*/text"]);
        assert_eq!(out["items"], json!([{ "text": "0" }, { "text": "1" }]));

        let out = clean(&["items/1/text"]);
        assert_eq!(
            out["items"],
            json!([{ "text": format!("0{x}") }, { "text": "1" }])
        );

        let out = clean(&["labels/*"]);
        assert_eq!(out["labels"], json!({ "en": "e", "fr": "f" }));

        let out = clean(&["a~1b/~0"]);
        assert_eq!(out["a/b"]["~"], "s");

        let out = clean(&["rows/*/*"]);
        assert_eq!(out["rows"], json!([["r"]]));

        let out = clean(&["*/*"]);
        assert_eq!(out["author"]["bio"], "a");
        assert_eq!(out["labels"]["fr"], "f");
        assert_eq!(out["items"][0]["text"], format!("0{x}"));

        // Everything not named is as it was.
        let all = clean(&[
            "author/bio",
            "items/*/text",
            "labels/*",
            "a~1b/~0",
            "rows/*/*",
        ]);
        let mut want: Value = serde_json::from_str(&body).unwrap();
        want["author"]["bio"] = json!("a");
        want["items"] = json!([{ "text": "0" }, { "text": "1" }]);
        want["labels"] = json!({ "en": "e", "fr": "f" });
        want["a/b"]["~"] = json!("s");
        want["rows"] = json!([["r"]]);
        assert_eq!(all, want);
    }

    #[test]
    fn top_level_array_and_escaped_names() {
        assert_eq!(
            sanitized(r#"[{"c":"<script>1</script>"},{"c":"ok"}]"#, &["*/c"]),
            r#"[{"c":""},{"c":"ok"}]"#
        );
        // The name is matched after unescaping; escaped markup in the value is decoded first.
        assert_eq!(
            sanitized(
                r#"{"c\u006fmment":"\u003cscript\u003ex\u003c/script\u003ey"}"#,
                &["comment"]
            ),
            r#"{"c\u006fmment":"y"}"#
        );
        // Quotes and backslashes in strings before the target do not confuse the scan.
        assert_eq!(
            sanitized(
                r#"{"q":"a\"b\\","\"":"\\\"","c":"<script>x</script>"}"#,
                &["c"]
            ),
            r#"{"q":"a\"b\\","\"":"\\\"","c":""}"#
        );
    }

    #[test]
    fn original_when_nothing_changed() {
        untouched(r#"{"comment":"<b>bold</b> and <i>fine</i>"}"#, &["comment"]);
        untouched(
            "{\n  \"comment\" : \"plain text\",\n  \"z\":1,\"a\":2\n}",
            &["comment"],
        );
        untouched(r#"{"other":"<script>x</script>"}"#, &["comment"]);
        untouched(r#"{"comment":"<script>x</script>"}"#, &["comment/x"]);
        untouched(
            r#"{"items":[{"text":"<script>x</script>"}]}"#,
            &["items/1/text"],
        );
        untouched(r#"{"items":{"0":"<script>x</script>"}}"#, &["items/00"]);
        untouched(r#""<script>x</script>""#, &["*"]);
        // Member names are never rewritten.
        untouched(r#"{"<script>x</script>":"fine"}"#, &["*"]);
        // No paths, nothing done.
        untouched(r#"{"c":"<script>x</script>"}"#, &[]);
    }

    #[test]
    fn non_string_targets_are_left_alone() {
        for value in [
            "1",
            "-2.5e3",
            "true",
            "null",
            "[]",
            r#"["<script>x</script>"]"#,
            r#"{"x":"<script>x</script>"}"#,
        ] {
            untouched(&format!(r#"{{"c":{value}}}"#), &["c"]);
        }
        // A key that looks like an index matches only in objects, by name.
        assert_eq!(
            sanitized(r#"{"items":{"0":"<script>x</script>"}}"#, &["items/0"]),
            r#"{"items":{"0":""}}"#
        );
    }

    #[test]
    fn the_schema_runs_before_sanitizing() {
        let s = schema(json!({
            "type": "object",
            "properties": { "c": { "type": "string", "maxLength": 5 } }
        }));
        let rules = rules(&["c"]).with_schema(s);
        let refusal = validate(br#"{"c":"<script>x</script>"}"#, &rules).unwrap_err();
        assert_eq!(refusal.status(), 422);
        // A body that passes may grow past the schema's limits: documented.
        assert_eq!(
            validate(br#"{"c":"a&b"}"#, &rules),
            Ok(Validated::Sanitized(bytes::Bytes::from_static(
                br#"{"c":"a&amp;b"}"#
            )))
        );
    }

    #[test]
    fn entities_never_smuggle_in_refused_controls() {
        // ammonia decodes character references; a control the strict parser refuses must
        // not reach the upstream through one.
        for entity in ["&#1;", "&#x7f;", "&#x81;", "&#12;", "&#x0B;", "&#27;[31m"] {
            let body = format!(r#"{{"c":"a{entity}b"}}"#);
            match validate(body.as_bytes(), &rules(&["c"])) {
                Ok(Validated::Original) => {}
                Ok(Validated::Sanitized(out)) => {
                    if let Err(e) = strict(&out) {
                        panic!(
                            "{entity}: {:?} is not strict JSON: {e}",
                            String::from_utf8_lossy(&out)
                        );
                    }
                }
                Err(e) => panic!("{entity}: {e}"),
            }
        }
        // Dropped, not decoded; allowed controls and other references are decoded as usual.
        assert_eq!(sanitized(r#"{"c":"a&#1;b"}"#, &["c"]), r#"{"c":"ab"}"#);
        assert_eq!(
            sanitized(r#"{"c":"a&#9;&#x81;&#233;b"}"#, &["c"]),
            "{\"c\":\"a\\t\u{e9}b\"}"
        );
    }

    #[test]
    fn field_paths() {
        use FieldPathError::*;
        for (raw, want) in [
            ("", Empty),
            ("/", Empty),
            ("a//b", EmptySegment),
            ("a/", EmptySegment),
            ("a~2", BadEscape),
            ("a~", BadEscape),
        ] {
            assert_eq!(FieldPath::parse(raw), Err(want), "{raw:?}");
        }
        let p: FieldPath = "/items/*/text".parse().unwrap();
        assert_eq!(p.as_str(), "/items/*/text");
        assert_eq!(p.to_string(), "/items/*/text");
        assert_eq!(format!("{p:?}"), r#"FieldPath("/items/*/text")"#);
    }
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    /// Any JSON value nested at most 6 deep, with strings (names included) free of control
    /// characters (`\PC` excludes C0, DEL and C1).
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            "\\PC{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(6, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::btree_map("\\PC{0,8}", inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Bytes that look enough like JSON to reach every branch of the parser.
    fn jsonish() -> impl Strategy<Value = Vec<u8>> {
        let pieces = prop_oneof![
            prop::sample::select(vec![
                "{", "}", "[", "]", ",", ":", "\"", "\\", "\\u", "\\ud83d", "\\ude00", "\\u0000",
                "\\u007f", "\\n", "\\t", "0", "-", "1e400", ".5", "e", "true", "null", "NaN", "//",
                "/*", "'", " ", "\n", "\u{7f}", "\u{85}", "\u{feff}", "a", "\"a\"", "\"a\":",
            ])
            .prop_map(|s: &str| s.as_bytes().to_vec()),
            prop::collection::vec(any::<u8>(), 1..3),
        ];
        prop::collection::vec(pieces, 0..40).prop_map(|v| v.concat())
    }

    proptest! {
        #[test]
        fn serde_json_output_is_accepted_and_read_back(value in json_value()) {
            for body in [
                serde_json::to_vec(&value).unwrap(),
                serde_json::to_vec_pretty(&value).unwrap(),
            ] {
                prop_assert_eq!(strict(&body), Ok(value.clone()));
            }
        }

        #[test]
        fn never_panics_on_arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse_strict(&body, JsonDepth::DEFAULT);
        }

        #[test]
        fn strict_is_a_subset_of_serde_json(body in jsonish()) {
            match parse_strict(&body, JsonDepth::new(4).unwrap()) {
                // What we accept, serde_json reads the same way.
                Ok(value) => {
                    let lax: Value = serde_json::from_slice(&body).unwrap();
                    prop_assert_eq!(value, lax);
                }
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        }
    }

    #[cfg(feature = "sanitize-html")]
    proptest! {
        #[test]
        fn sanitized_bodies_parse_strictly(
            text in "(<[a-z]{1,6}( [a-z]{1,5}=\"[^\"]{0,6}\")?>|</[a-z]{1,6}>|&#x?[0-9a-f]{1,4};|&[a-z]{2,5};|[ -~]|\\PC){0,16}"
        ) {
            let body = json!({ "c": text, "keep": text }).to_string();
            prop_assume!(strict(body.as_bytes()).is_ok());
            let rules = BodyRules::new().add_sanitize_html(FieldPath::parse("c").unwrap());
            match validate(body.as_bytes(), &rules) {
                Ok(Validated::Original) => {}
                Ok(Validated::Sanitized(out)) => {
                    let value = strict(&out);
                    prop_assert!(value.is_ok(), "{:?}: {:?}", String::from_utf8_lossy(&out), value);
                    prop_assert_eq!(&value.unwrap()["keep"], &Value::from(text));
                }
                Err(e) => prop_assert!(false, "{}", e),
            }
        }
    }
}
