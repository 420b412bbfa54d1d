//! A minimal DynamoDB stand-in for benchmarks: answers GetItem, PutItem and BatchGetItem from
//! memory over keep-alive HTTP/1.1, so the benchmark measures the client, not moto (which closes
//! every connection and costs milliseconds per call). `GET /wp-login.php` answers a small page, for
//! the application checks' share of the benchmark.
//!
//! Usage: `cargo run --release --example ddb_stub -- 127.0.0.1:PORT`

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

type Items = Arc<Mutex<HashMap<(String, String), Value>>>;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    println!("{}", listener.local_addr().unwrap());
    let items: Items = Arc::default();
    let app = Router::new()
        .route("/", post(handle))
        .route(
            "/wp-login.php",
            get(|| async { "<form name=\"loginform\"><input id=\"wp-submit\"></form>" }),
        )
        .with_state(items);
    axum::serve(listener, app).await.expect("serve");
}

fn key_of(key: &Value) -> String {
    key.as_object()
        .and_then(|m| m.values().next())
        .map(|v| v.to_string())
        .unwrap_or_default()
}

async fn handle(State(items): State<Items>, headers: HeaderMap, body: Bytes) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "bad json").into_response();
    };
    let table = req["TableName"].as_str().unwrap_or_default().to_string();
    let answer = match target.rsplit('.').next().unwrap_or_default() {
        "GetItem" => {
            // Every table has its health item; canaries are returned if they were written.
            let k = key_of(&req["Key"]);
            let item = items
                .lock()
                .unwrap()
                .get(&(table, k))
                .cloned()
                .unwrap_or_else(|| json!({"pk": req["Key"]["pk"], "note": {"S": "stub"}}));
            json!({ "Item": item })
        }
        "PutItem" => {
            let k = key_of(&json!({"pk": req["Item"]["pk"]}));
            items
                .lock()
                .unwrap()
                .insert((table, k), req["Item"].clone());
            json!({})
        }
        "BatchGetItem" => {
            let mut responses = serde_json::Map::new();
            if let Some(tables) = req["RequestItems"].as_object() {
                let store = items.lock().unwrap();
                for (t, spec) in tables {
                    let found: Vec<Value> = spec["Keys"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|k| store.get(&(t.clone(), key_of(k))).cloned())
                        .collect();
                    responses.insert(t.clone(), Value::Array(found));
                }
            }
            json!({ "Responses": responses, "UnprocessedKeys": {} })
        }
        other => {
            return (
                StatusCode::BAD_REQUEST,
                format!("{{\"__type\":\"UnknownOperationException\",\"message\":\"{other}\"}}"),
            )
                .into_response()
        }
    };
    (
        [("content-type", "application/x-amz-json-1.0")],
        answer.to_string(),
    )
        .into_response()
}
