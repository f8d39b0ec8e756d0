use super::*;

#[test]
fn public_types_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Triage>();
    assert_send_sync::<Route>();
    assert_send_sync::<TriageError>();
}

const ACME: &str = include_str!("../triage.toml");

fn acme() -> Triage {
    Triage::from_toml(ACME).unwrap()
}

#[test]
fn the_sample_triage_loads() {
    let triage = acme();
    assert_eq!(triage.default_team(), "support");
    assert_eq!(
        triage.teams().collect::<Vec<_>>(),
        ["orders", "billing", "returns", "technical"]
    );
}

#[test]
fn questions_go_to_the_team_whose_keywords_they_mention() {
    let triage = acme();
    for (text, team) in [
        ("Hi, where is my order 42?", "orders"),
        ("My parcel still hasn't arrived", "orders"),
        ("I was charged twice on my last invoice", "billing"),
        ("Can I pay with PayPal?", "billing"),
        ("The shoes don't fit, can I send them back?", "returns"),
        ("I get an error when I log in on the website", "technical"),
        ("The kettle is broken after a week", "technical"),
    ] {
        assert_eq!(triage.route(text).team, team, "{text:?}");
    }
}

#[test]
fn a_route_names_the_keywords_that_chose_it() {
    let triage = acme();
    let route = triage.route("The delivery of my order is late");
    assert_eq!(route.team, "orders");
    assert_eq!(route.matched, ["order", "delivery", "late"]);
    assert!((route.confidence - 0.875).abs() < 1e-9, "{route:?}");

    let route = triage.route("Refund please");
    assert_eq!(route.matched, ["refund"]);
    assert!((route.confidence - 0.5).abs() < 1e-9, "{route:?}");
}

#[test]
fn the_team_with_most_keywords_wins_and_shares_its_confidence() {
    let triage = acme();
    // billing: refund, charge; orders: order.
    let route = triage.route("I want a refund for order 42, you charged me twice");
    assert_eq!(route.team, "billing");
    assert_eq!(route.matched, ["refund", "charge"]);
    assert!(
        (route.confidence - 0.75 * 2.0 / 3.0).abs() < 1e-9,
        "{route:?}"
    );
}

#[test]
fn ties_go_to_the_rule_listed_first() {
    let triage = acme();
    let route = triage.route("a refund for my order");
    assert_eq!(route.team, "orders");
    assert!((route.confidence - 0.25).abs() < 1e-9, "{route:?}");

    let swapped = Triage::new(
        vec![
            Rule::new("billing", ["refund"]),
            Rule::new("orders", ["order"]),
        ],
        "support",
    )
    .unwrap();
    assert_eq!(swapped.route("a refund for my order").team, "billing");
}

#[test]
fn no_keyword_routes_to_the_default_team_with_zero_confidence() {
    let triage = acme();
    for text in ["", "Hello!", "What a lovely day", "¿Hablan español?"] {
        let route = triage.route(text);
        assert_eq!(route.team, "support", "{text:?}");
        assert!(route.confidence.abs() < f64::EPSILON);
        assert!(route.matched.is_empty());
    }
}

#[test]
fn key_phrases_match_their_words_in_a_row() {
    let triage = Triage::new(vec![Rule::new("billing", ["credit card"])], "support").unwrap();
    assert_eq!(triage.route("my Credit-Card was declined").team, "billing");
    assert_eq!(triage.route("a card, but no credit").team, "support");
}

#[test]
fn a_long_text_is_routed_within_bounds() {
    let triage = acme();
    let text = format!("{} refund", "blah ".repeat(100_000));
    assert_eq!(
        triage.route(&text).team,
        "support",
        "only the start of a text counts"
    );
}

#[test]
fn malformed_toml_is_refused_with_the_line() {
    let err = Triage::from_toml("default_team = \"support\"\n[[rule]\nteam = \"x\"\n").unwrap_err();
    assert!(matches!(err, TriageError::Toml(_)), "{err:?}");
    assert!(err.to_string().contains("line 2"), "{err}");

    let err =
        Triage::from_toml("[[rule]]\nteam = \"billing\"\nkeyword = [\"refund\"]\n").unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("keyword") && msg.contains("line 3"), "{msg}");
}

#[test]
fn duplicate_teams_are_refused_with_both_places() {
    let err = Triage::from_toml(
        "[[rule]]\nteam = \"billing\"\nkeywords = [\"refund\"]\n\n\
         [[rule]]\nteam = \"billing\"\nkeywords = [\"invoice\"]\n",
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "line 5: team \"billing\" already has a rule (line 1); put its keywords in one rule"
    );
    let err = Triage::new(
        vec![Rule::new("a", ["x"]), Rule::new("a", ["y"])],
        "support",
    )
    .unwrap_err();
    assert!(
        matches!(&err, TriageError::DuplicateTeam { at, first, .. } if at == "rule 2" && first == "rule 1"),
        "{err:?}"
    );
}

#[test]
fn rules_past_the_limits_are_refused() {
    let problem = |rules: Vec<Rule>| match Triage::new(rules, "support") {
        Err(TriageError::Rule { at, problem, .. }) => {
            assert_eq!(at, "rule 1");
            problem
        }
        other => panic!("{other:?}"),
    };
    assert!(problem(vec![Rule::new("a", Vec::<String>::new())]).contains("keywords"));
    assert!(problem(vec![Rule::new("a", ["the"])]).contains("stop word"));
    assert!(problem(vec![Rule::new("a", ["x".repeat(MAX_KEYWORD_CHARS + 1)])]).contains("keyword"));
    assert!(problem(vec![Rule::new("a", vec!["x"; MAX_KEYWORDS + 1])]).contains("keywords"));
    assert!(problem(vec![Rule::new(" ", ["x"])]).contains("team name"));
    assert!(problem(vec![Rule::new("t".repeat(MAX_TEAM_CHARS + 1), ["x"])]).contains("team name"));

    let many = (0..=MAX_RULES)
        .map(|i| Rule::new(format!("t{i}"), ["x"]))
        .collect();
    assert!(matches!(
        Triage::new(many, "support"),
        Err(TriageError::TooManyRules { .. })
    ));
    assert!(matches!(
        Triage::new(vec![], "a\nb"),
        Err(TriageError::DefaultTeam(_))
    ));
    assert!(matches!(
        Triage::from_toml("default_team = \"\""),
        Err(TriageError::DefaultTeam(_))
    ));
    let huge = format!("# {}", "x".repeat(MAX_TRIAGE_BYTES));
    assert!(matches!(
        Triage::from_toml(&huge),
        Err(TriageError::TooLarge { .. })
    ));
}
