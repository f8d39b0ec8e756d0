//! The schemas in /openapi.json describe what really travels: every wire value and every answer
//! of a whole flow is checked against them with a small JSON Schema validator (the subset the
//! document uses: `$ref`, `type`, `const`, `enum`, `required`, `properties`,
//! `additionalProperties`, `items`, `maxItems`, `oneOf`, `minimum`, and the two patterns).

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::Value;
use switchboard_protocol::{
    AgentCredential, AgentKind, CommitAction, Content, CredentialRequest, Floor, Member, SeenWraps,
    ThreadState, WireType, encode,
};

use crate::{Relay, code};

const HEX: &str = "^[0-9a-f]{32}$";
const B64: &str = "^[A-Za-z0-9_-]*$";

/// Why `value` does not match `schema`, or `None` if it does.
fn mismatch(doc: &Value, schema: &Value, value: &Value, at: &str) -> Option<String> {
    let fail = |what: String| Some(format!("{at}: {what}"));
    if let Some(target) = schema.get("$ref").and_then(Value::as_str) {
        let name = target.strip_prefix("#/components/schemas/")?;
        return mismatch(doc, &doc["components"]["schemas"][name], value, at);
    }
    if let Some(options) = schema.get("oneOf").and_then(Value::as_array) {
        let matching = options
            .iter()
            .filter(|o| mismatch(doc, o, value, at).is_none())
            .count();
        return (matching != 1).then(|| format!("{at}: {matching} of oneOf match {value}"));
    }
    if let Some(expected) = schema.get("const")
        && expected != value
    {
        return fail(format!("{value} is not {expected}"));
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        return fail(format!("{value} is not one of {options:?}"));
    }
    if let Some(kind) = schema.get("type").and_then(Value::as_str) {
        let ok = match kind {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_u64() || value.is_i64(),
            "boolean" => value.is_boolean(),
            "null" => value.is_null(),
            _ => false,
        };
        if !ok {
            return fail(format!("{value} is not of type {kind}"));
        }
    }
    if let (Some(minimum), Some(n)) = (
        schema.get("minimum").and_then(Value::as_i64),
        value.as_i64(),
    ) && n < minimum
    {
        return fail(format!("{n} < {minimum}"));
    }
    if let (Some(pattern), Some(text)) = (
        schema.get("pattern").and_then(Value::as_str),
        value.as_str(),
    ) {
        let ok = match pattern {
            HEX => {
                text.len() == 32
                    && text
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            }
            B64 => text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            other => return fail(format!("the validator does not know pattern {other}")),
        };
        if !ok {
            return fail(format!("{text:?} does not match {pattern}"));
        }
    }
    if let Some(items) = value.as_array() {
        if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
            && items.len() as u64 > max
        {
            return fail(format!("more than {max} items"));
        }
        if let Some(item_schema) = schema.get("items") {
            for (i, item) in items.iter().enumerate() {
                if let Some(e) = mismatch(doc, item_schema, item, &format!("{at}[{i}]")) {
                    return Some(e);
                }
            }
        }
    }
    if let Some(fields) = value.as_object() {
        for name in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !fields.contains_key(name) {
                return fail(format!("missing required {name:?}"));
            }
        }
        let properties = schema.get("properties").and_then(Value::as_object);
        for (name, field) in fields {
            let path = format!("{at}.{name}");
            match (
                properties.and_then(|p| p.get(name)),
                schema.get("additionalProperties"),
            ) {
                (Some(field_schema), _) => {
                    if let Some(e) = mismatch(doc, field_schema, field, &path) {
                        return Some(e);
                    }
                }
                (None, Some(Value::Bool(false))) => {
                    return fail(format!("field {name:?} is not in the schema"));
                }
                (None, Some(extra)) if extra.is_object() => {
                    if let Some(e) = mismatch(doc, extra, field, &path) {
                        return Some(e);
                    }
                }
                (None, _) => {}
            }
        }
    }
    None
}

fn assert_matches(doc: &Value, schema: &str, value: &Value) {
    let schema = serde_json::json!({ "$ref": format!("#/components/schemas/{schema}") });
    if let Some(e) = mismatch(doc, &schema, value, "$") {
        panic!("{schema} does not describe the value: {e}\n{value:#}");
    }
}

fn wire<T: WireType>(value: &T) -> Value {
    serde_json::from_slice(&encode(value).unwrap()).unwrap()
}

/// The answer schema the document gives for `method path` with `status`.
fn answer_schema<'a>(doc: &'a Value, path: &str, method: &str, status: StatusCode) -> &'a Value {
    &doc["paths"][path][method]["responses"][status.as_str()]["content"]["application/json"]["schema"]
}

fn assert_answer(doc: &Value, path: &str, method: &str, status: StatusCode, json: &Value) {
    let schema = answer_schema(doc, path, method, status);
    assert!(schema.is_object(), "{method} {path} {status} has no schema");
    if let Some(e) = mismatch(doc, schema, json, "$") {
        panic!("answer of {method} {path} ({status}): {e}\n{json:#}");
    }
}

#[tokio::test]
async fn openapi_schemas_describe_every_wire_value_and_answer() {
    let mut relay = Relay::new().await;
    let (_, doc) = relay
        .send(Request::get("/openapi.json").body(Body::empty()).unwrap())
        .await;
    let now = relay.now();
    let mut rng = switchboard_protocol::Csprng::from_seed([3; 32]);
    let (customer, admin, bot, human) = (
        relay.device(),
        relay.device(),
        relay.device(),
        relay.device(),
    );
    for keys in [&customer, &admin, &bot, &human] {
        let (status, json) = relay.register(keys).await;
        assert_answer(&doc, "/v1/devices", "post", status, &json);
        assert_matches(&doc, "KeyBundle", &wire(&keys.bundle(now)));
    }
    let (status, json) = relay
        .post(
            &admin,
            "/v1/entities",
            br#"{"v":1,"entity":"acme","display_name":"Acme"}"#,
        )
        .await;
    assert_answer(&doc, "/v1/entities", "post", status, &json);
    let request = relay.signed(&customer, "GET", "/v1/entities/acme", b"");
    let (status, json) = relay.send(request).await;
    assert_answer(&doc, "/v1/entities/{entity}", "get", status, &json);
    let path = format!("/v1/devices/{}", bot.device());
    let request = relay.signed(&customer, "GET", &path, b"");
    let (status, json) = relay.send(request).await;
    assert_answer(&doc, "/v1/devices/{device}", "get", status, &json);

    let acme = switchboard_protocol::EntityId::new("acme").unwrap();
    let (mut customer_view, open) =
        ThreadState::open(&customer, acme.clone(), &admin.bundle(now), now, &mut rng).unwrap();
    assert_matches(&doc, "ThreadOpen", &wire(&open));
    let (status, json) = relay
        .post(&customer, "/v1/threads", &encode(&open).unwrap())
        .await;
    assert_answer(&doc, "/v1/threads", "post", status, &json);
    let thread_path = format!("/v1/threads/{}", open.thread);
    let hello = customer_view
        .seal(&customer, &Content::text("hello"), None)
        .unwrap();
    assert_matches(&doc, "SealedMessage", &wire(&hello));
    let (status, json) = relay
        .post(
            &customer,
            &format!("{thread_path}/messages"),
            &encode(&hello).unwrap(),
        )
        .await;
    assert_answer(&doc, "/v1/threads/{thread}/messages", "post", status, &json);

    // Every commit action.
    let mut admin_view =
        ThreadState::accept(&admin, &acme, &open, now, &mut SeenWraps::new()).unwrap();
    admin_view.open_message(&hello, now).unwrap();
    let member = |keys: &switchboard_protocol::DeviceKeys, name: &str| {
        let bundle = keys.bundle(now);
        let credential = AgentCredential::issue(
            &admin,
            &CredentialRequest {
                entity: &acme,
                agent: &bundle,
                display_name: name,
                kind: AgentKind::Bot,
                issued_at: now,
                expires_at: now.plus(3600),
            },
        )
        .unwrap();
        assert_matches(&doc, "AgentCredential", &wire(&credential));
        Box::new(Member::agent(bundle, credential))
    };
    let actions = [
        CommitAction::Assign {
            agent: member(&bot, "Bot"),
        },
        CommitAction::AddToGroup {
            agent: member(&human, "Dana"),
        },
        CommitAction::SetFloor {
            floor: Floor::Agent(human.device()),
        },
        CommitAction::Remove {
            device: human.device(),
        },
        CommitAction::Transfer {
            from: bot.device(),
            to: member(&human, "Dana"),
        },
        CommitAction::Rekey,
    ];
    for action in actions {
        let commit = admin_view.commit(&admin, action, now, &mut rng).unwrap();
        assert_matches(&doc, "Commit", &wire(&commit));
        let (status, json) = relay
            .post(
                &admin,
                &format!("{thread_path}/commits"),
                &encode(&commit).unwrap(),
            )
            .await;
        assert_answer(&doc, "/v1/threads/{thread}/commits", "post", status, &json);
    }
    let grant = admin_view
        .grant_history(
            &admin,
            &human.bundle(now),
            vec![hello.clone()],
            now,
            &mut rng,
        )
        .unwrap();
    assert_matches(&doc, "HistoryGrant", &wire(&grant));
    let (status, json) = relay
        .post(
            &admin,
            &format!("{thread_path}/history"),
            &encode(&grant).unwrap(),
        )
        .await;
    assert_answer(&doc, "/v1/threads/{thread}/history", "post", status, &json);
    let reply = customer_view.seal(
        &customer,
        &Content::Reply { text: "re".into() },
        Some(hello.header.message_id()),
    );
    // (The customer has not applied the commits, so it still seals into epoch 0: fine here.)
    assert_matches(&doc, "SealedMessage", &wire(&reply.unwrap()));

    // The inboxes hold every kind of item; each answer matches, and so does the ack.
    for keys in [&admin, &human, &customer] {
        let request = relay.signed(keys, "GET", "/v1/inbox?after=0", b"");
        let (status, json) = relay.send(request).await;
        assert_answer(&doc, "/v1/inbox", "get", status, &json);
        assert!(!json["items"].as_array().unwrap().is_empty());
        let (status, json) = relay
            .post(keys, "/v1/inbox/ack", br#"{"v":1,"up_to":1000}"#)
            .await;
        assert_answer(&doc, "/v1/inbox/ack", "post", status, &json);
    }

    // Errors match the Error schema; and the validator is not vacuous.
    let (status, json) = relay.post(&customer, "/v1/entities", b"{}").await;
    assert_eq!(code(&json), "malformed", "{status}");
    assert_matches(&doc, "Error", &json);
    let mut extra = wire(&hello);
    extra["surprise"] = Value::Bool(true);
    let schema = serde_json::json!({ "$ref": "#/components/schemas/SealedMessage" });
    assert!(mismatch(&doc, &schema, &extra, "$").is_some());
    let mut bad = wire(&hello);
    bad["header"]["thread"] = Value::String("ABC".into());
    assert!(mismatch(&doc, &schema, &bad, "$").is_some());
}
