//! What body validation costs, per byte of a realistic JSON body (an order: a customer,
//! an address, a note and line items), at about 1 KiB, 4 KiB and 64 KiB:
//!
//! - `serde_json`: `serde_json::from_slice::<Value>`, the baseline a lax gateway would pay;
//! - `parse_strict`: the strict parse alone (duplicate names, depth, controls);
//! - `schema`: `validate` with a Draft 2020-12 schema (patterns, formats, enums, bounds);
//! - `sanitize_html`: `validate` with two `sanitize_html` paths (`note`, `items/*/description`)
//!   and no schema. The HTML in the body is already clean, the common case, so the body is
//!   forwarded as it came ([`Validated::Original`]): the cost is the scan and ammonia's
//!   parse of each named string.
//!
//! `schema` and `sanitize_html` each include the strict parse: their extra cost is their
//! figure minus `parse_strict`'s. Each group reports a throughput in bytes per second.
//!
//! ```text
//! cargo bench -p portcullis --bench validate -- --warm-up-time 1 --measurement-time 3
//! ```

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use portcullis::validate::{
    BodyRules, CompiledSchema, FieldPath, JsonDepth, Validated, parse_strict, validate,
};
use serde_json::{Value, json};

/// An order with line items added until its compact JSON is at least `target` bytes.
fn order(target: usize) -> Vec<u8> {
    let mut order = json!({
        "order_id": "ord_004217",
        "currency": "EUR",
        "created_at": "2026-12-05T10:15:30Z",
        "customer": {
            "id": 90211,
            "email": "alice.martin@example.com",
            "name": "Alice Martin",
            "loyalty": { "tier": "gold", "points": 12840 }
        },
        "shipping": {
            "street": "12 rue des Lilas",
            "city": "Lyon",
            "postcode": "69003",
            "country": "FR",
            "express": false
        },
        "note": "Please <b>ring twice</b>; the bell is <i>quiet</i>.",
        "items": []
    });
    let mut i = 0;
    while serde_json::to_vec(&order).map_or(0, |b| b.len()) < target {
        i += 1;
        let item = json!({
            "sku": format!("SKU-{i:05}"),
            "name": format!("Stainless widget, model {i}"),
            "qty": 1 + i % 7,
            "unit_price": 4.5 + f64::from(i % 40) * 1.25,
            "discount": null,
            "tags": ["kitchen", if i % 2 == 0 { "steel" } else { "blue" }],
            "description": format!(
                "<p>A <strong>sturdy</strong> widget for everyday use, batch {i}. \
                 Dishwasher safe.</p>"
            )
        });
        order["items"].as_array_mut().expect("items").push(item);
    }
    serde_json::to_vec(&order).expect("an order serialises")
}

fn schema() -> CompiledSchema {
    CompiledSchema::from_value(&json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "required": ["order_id", "currency", "customer", "items"],
        "additionalProperties": false,
        "properties": {
            "order_id": { "type": "string", "pattern": "^ord_[0-9]{6}$" },
            "currency": { "enum": ["EUR", "GBP", "USD"] },
            "created_at": { "type": "string", "format": "date-time" },
            "customer": {
                "type": "object",
                "required": ["id", "email"],
                "properties": {
                    "id": { "type": "integer", "minimum": 1 },
                    "email": { "type": "string", "format": "email" },
                    "name": { "type": "string", "maxLength": 200 },
                    "loyalty": {
                        "type": "object",
                        "properties": {
                            "tier": { "enum": ["none", "silver", "gold"] },
                            "points": { "type": "integer", "minimum": 0 }
                        }
                    }
                }
            },
            "shipping": {
                "type": "object",
                "required": ["street", "city", "country"],
                "properties": {
                    "street": { "type": "string", "maxLength": 200 },
                    "city": { "type": "string", "maxLength": 100 },
                    "postcode": { "type": "string", "pattern": "^[0-9A-Z -]{3,10}$" },
                    "country": { "type": "string", "pattern": "^[A-Z]{2}$" },
                    "express": { "type": "boolean" }
                }
            },
            "note": { "type": "string", "maxLength": 2000 },
            "items": {
                "type": "array",
                "minItems": 1,
                "maxItems": 1000,
                "items": {
                    "type": "object",
                    "required": ["sku", "qty", "unit_price"],
                    "additionalProperties": false,
                    "properties": {
                        "sku": { "type": "string", "pattern": "^SKU-[0-9]{5}$" },
                        "name": { "type": "string", "maxLength": 200 },
                        "qty": { "type": "integer", "minimum": 1, "maximum": 100 },
                        "unit_price": { "type": "number", "exclusiveMinimum": 0 },
                        "discount": { "type": ["number", "null"] },
                        "tags": {
                            "type": "array",
                            "items": { "type": "string" },
                            "maxItems": 10,
                            "uniqueItems": true
                        },
                        "description": { "type": "string", "maxLength": 2000 }
                    }
                }
            }
        }
    }))
    .expect("the bench schema compiles")
}

fn bodies(c: &mut Criterion) {
    let with_schema = BodyRules::new().with_schema(Arc::new(schema()));
    let with_sanitize = BodyRules::new()
        .add_sanitize_html(FieldPath::parse("note").expect("a field path"))
        .add_sanitize_html(FieldPath::parse("items/*/description").expect("a field path"));

    for (name, target) in [
        ("body_1KiB", 1024),
        ("body_4KiB", 4 * 1024),
        ("body_64KiB", 64 * 1024),
    ] {
        let body = order(target);
        // Every variant must take its full path: a refusal would measure an early exit.
        assert_eq!(validate(&body, &with_schema), Ok(Validated::Original));
        assert_eq!(validate(&body, &with_sanitize), Ok(Validated::Original));

        let mut g = c.benchmark_group(name);
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function("serde_json", |b| {
            b.iter(|| serde_json::from_slice::<Value>(black_box(&body)).expect("JSON"))
        });
        g.bench_function("parse_strict", |b| {
            b.iter(|| parse_strict(black_box(&body), JsonDepth::DEFAULT).expect("strict JSON"))
        });
        g.bench_function("schema", |b| {
            b.iter(|| validate(black_box(&body), &with_schema).expect("valid"))
        });
        g.bench_function("sanitize_html", |b| {
            b.iter(|| validate(black_box(&body), &with_sanitize).expect("valid"))
        });
        g.finish();
    }
}

criterion_group!(benches, bodies);
criterion_main!(benches);
