use super::*;

#[test]
fn public_types_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Faq>();
    assert_send_sync::<Answer>();
    assert_send_sync::<FaqError>();
}

const ACME: &str = include_str!("../faq.toml");

fn acme() -> Faq {
    Faq::from_toml(ACME).unwrap()
}

fn reply_id(faq: &Faq, text: &str) -> String {
    let answer = faq.answer(text);
    let best = faq.best(text).unwrap();
    assert!(
        matches!(answer, Answer::Reply(_)),
        "{text:?} was handed off (best {best:?})"
    );
    best.id.to_owned()
}

#[test]
fn the_sample_faq_loads() {
    let faq = acme();
    assert_eq!(faq.handoff_team(), "support");
    assert!((faq.min_score() - 0.5).abs() < f64::EPSILON);
    assert_eq!(
        faq.ids().collect::<Vec<_>>(),
        [
            "opening-hours",
            "returns",
            "shipping",
            "payment",
            "warranty",
            "contact"
        ]
    );
}

#[test]
fn exact_questions_are_answered_with_their_entry() {
    let faq = acme();
    for (question, id) in [
        ("What are your opening hours?", "opening-hours"),
        ("How do I return an item?", "returns"),
        ("How long does shipping take?", "shipping"),
        ("Which payment methods do you accept?", "payment"),
        ("How long is the warranty?", "warranty"),
        ("What is your phone number?", "contact"),
    ] {
        let best = faq.best(question).unwrap();
        assert_eq!(best.id, id, "{question}");
        assert!((best.score - 1.0).abs() < 1e-9, "{question}: {best:?}");
        assert_eq!(reply_id(&faq, question), id);
    }
    let Answer::Reply(text) = faq.answer("what are your OPENING hours") else {
        panic!("not answered");
    };
    assert!(text.starts_with("Our shop and our support are open Monday to Friday"));
    assert!(!text.contains('\\') && !text.starts_with('\n'));
}

#[test]
fn paraphrased_questions_are_answered() {
    let faq = acme();
    for (question, id) in [
        ("are you opened on saturdays?", "opening-hours"),
        ("When do you close today", "opening-hours"),
        ("Can I send back shoes that don't fit?", "returns"),
        ("I'd like my money back, refunds possible?", "returns"),
        (
            "how many days until my parcel is delivered to Austria",
            "shipping",
        ),
        ("Do you take PayPal", "payment"),
        ("the kettle I bought is defective", "warranty"),
        ("can I call you", "contact"),
    ] {
        assert_eq!(reply_id(&faq, question), id, "{question}");
    }
}

#[test]
fn unrelated_text_is_handed_off_with_a_note_quoting_it() {
    let faq = acme();
    let question = "My cat\nate my homework,\tcan a human help?";
    let Answer::Handoff { team, note } = faq.answer(question) else {
        panic!("answered an unrelated question");
    };
    assert_eq!(team, "support");
    assert!(
        note.contains("\"My cat ate my homework, can a human help?\""),
        "{note}"
    );
    assert!(!note.contains('\n'));
}

#[test]
fn a_handoff_note_is_bounded() {
    let faq = acme();
    let question = "zebra ".repeat(10_000);
    let Answer::Handoff { note, .. } = faq.answer(&question) else {
        panic!("answered");
    };
    assert!(
        note.chars().count() < NOTE_QUOTE_CHARS + 200,
        "{}",
        note.len()
    );
    assert!(note.contains("zebra zebra"));
    assert!(note.contains("nothing close"));
}

#[test]
fn a_weak_match_is_handed_off_and_names_the_closest_entry() {
    let faq = Faq::from_toml(
        r#"
        min_score = 0.9
        handoff_team = "humans"
        [[entry]]
        id = "hours"
        questions = ["What are your opening hours?"]
        keywords = ["open"]
        answer = "9 to 5."
        "#,
    )
    .unwrap();
    let Answer::Handoff { team, note } = faq.answer("are you open?") else {
        panic!("answered below min_score");
    };
    assert_eq!(team, "humans");
    assert!(note.contains("closest \"hours\" at 0.75"), "{note}");
    assert_eq!(
        faq.answer("opening hours?"),
        Answer::Reply("9 to 5.".into())
    );
}

#[test]
fn ties_are_broken_by_file_order() {
    let faq = Faq::from_toml(
        r#"
        [[entry]]
        id = "first"
        questions = ["Where is the shop?"]
        answer = "First."
        [[entry]]
        id = "second"
        questions = ["Where is the shop?"]
        answer = "Second."
        "#,
    )
    .unwrap();
    assert_eq!(
        faq.answer("where is the shop"),
        Answer::Reply("First.".into())
    );
    assert_eq!(faq.best("shop").unwrap().id, "first");
}

#[test]
fn defaults_apply_and_an_empty_faq_hands_everything_off() {
    let faq = Faq::from_toml("").unwrap();
    assert!(faq.is_empty());
    assert_eq!(faq.len(), 0);
    assert_eq!(faq.handoff_team(), DEFAULT_HANDOFF_TEAM);
    assert!(faq.best("hello").is_none());
    assert!(matches!(
        faq.answer("What are your opening hours?"),
        Answer::Handoff { team, .. } if team == "support"
    ));
}

#[test]
fn malformed_toml_is_refused_with_the_line() {
    let err = Faq::from_toml("handoff_team = \"support\"\n[[entry]\nid = 1\n").unwrap_err();
    assert!(matches!(err, FaqError::Toml(_)), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("line 2"), "{msg}");
}

#[test]
fn a_misspelt_or_missing_field_is_named() {
    let err = Faq::from_toml(
        r#"
        [[entry]]
        id = "hours"
        questions = ["When are you open?"]
        keyword = ["open"]
        answer = "9 to 5."
        "#,
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("keyword") && msg.contains("line 5"), "{msg}");

    let err = Faq::from_toml("[[entry]]\nid = \"hours\"\nquestions = [\"When?\"]\n").unwrap_err();
    assert!(err.to_string().contains("answer"), "{err}");

    let err = Faq::from_toml("min_score = \"high\"").unwrap_err();
    assert!(err.to_string().contains("min_score"), "{err}");
}

#[test]
fn duplicate_ids_are_refused_with_both_lines() {
    let err = Faq::from_toml(
        "[[entry]]\nid = \"a\"\nquestions = [\"shop?\"]\nanswer = \"x\"\n\n\
         [[entry]]\nid = \"a\"\nquestions = [\"street?\"]\nanswer = \"y\"\n",
    )
    .unwrap_err();
    assert!(
        matches!(&err, FaqError::DuplicateId { id, first_line: 1, line: 6 } if id == "a"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "line 6: entry id \"a\" is already used by the entry at line 1"
    );
}

fn entry(id: &str, questions: &str, keywords: &str, answer: &str) -> String {
    format!(
        "[[entry]]\nid = {id:?}\nquestions = [{questions}]\nkeywords = [{keywords}]\nanswer = {answer:?}\n"
    )
}

fn entry_problem(toml: &str) -> String {
    match Faq::from_toml(toml) {
        Err(FaqError::Entry { problem, line, .. }) => {
            assert_eq!(line, 1);
            problem
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn entries_past_the_limits_are_refused() {
    let long_answer = "a".repeat(MAX_ANSWER_CHARS + 1);
    assert!(entry_problem(&entry("x", "\"shop?\"", "", &long_answer)).contains("answer"));
    assert!(entry_problem(&entry("x", "\"shop?\"", "", " ")).contains("answer"));
    let long_q = format!("{:?}", "shop ".repeat(MAX_QUESTION_CHARS));
    assert!(entry_problem(&entry("x", &long_q, "", "a")).contains("question 1"));
    let many_q = vec!["\"shop?\""; MAX_QUESTIONS + 1].join(",");
    assert!(entry_problem(&entry("x", &many_q, "", "a")).contains("questions"));
    assert!(entry_problem(&entry("x", "", "", "a")).contains("questions"));
    assert!(entry_problem(&entry("x", "\"How are you?\"", "", "a")).contains("stop words"));
    let many_k = vec!["\"shop\""; MAX_KEYWORDS + 1].join(",");
    assert!(entry_problem(&entry("x", "\"shop?\"", &many_k, "a")).contains("keywords"));
    assert!(entry_problem(&entry("x", "\"shop?\"", "\"the\"", "a")).contains("keyword"));
    assert!(entry_problem(&entry("", "\"shop?\"", "", "a")).contains("id"));
    assert!(entry_problem(&entry("a b", "\"shop?\"", "", "a")).contains("id"));

    let many = entry("x", "\"shop?\"", "", "a").repeat(MAX_ENTRIES + 1);
    assert!(matches!(
        Faq::from_toml(&many),
        Err(FaqError::TooManyEntries { count, max: MAX_ENTRIES }) if count == MAX_ENTRIES + 1
    ));
    let huge = format!("# {}", "x".repeat(MAX_FAQ_BYTES));
    assert!(matches!(
        Faq::from_toml(&huge),
        Err(FaqError::TooLarge { .. })
    ));
}

#[test]
fn settings_out_of_range_are_refused() {
    for (toml, field) in [
        ("min_score = 1.5", "min_score"),
        ("min_score = -0.1", "min_score"),
        ("min_score = nan", "min_score"),
        ("handoff_team = \"\"", "handoff_team"),
        ("handoff_team = \"a\\nb\"", "handoff_team"),
    ] {
        match Faq::from_toml(toml) {
            Err(FaqError::Setting { field: f, .. }) => assert_eq!(f, field, "{toml}"),
            other => panic!("{toml}: {other:?}"),
        }
    }
}

#[test]
fn jaccard_is_the_share_of_common_tokens() {
    let s = |v: &[&str]| v.iter().map(|t| (*t).to_owned()).collect::<Vec<_>>();
    assert!((jaccard(&s(&["a", "b"]), &s(&["b", "c"])) - 1.0 / 3.0).abs() < 1e-9);
    assert!((jaccard(&s(&["a"]), &s(&["a"])) - 1.0).abs() < 1e-9);
    assert!(jaccard(&[], &[]).abs() < 1e-9);
}
