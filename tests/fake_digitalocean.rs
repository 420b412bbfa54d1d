//! The fake DigitalOcean API enforces the real API's rules; the responder's tests rely on it, so
//! its rules are tested too.

use fake_digitalocean::{FakeDo, Fault};
use serde_json::{json, Value};

const TOKEN: &str = "fake-do-test-token";

async fn fake() -> FakeDo {
    let f = FakeDo::start_with_limit("127.0.0.1:0", TOKEN, 20)
        .await
        .unwrap();
    let rules = json!([{"entry_protocol": "http", "entry_port": 80, "target_protocol": "http", "target_port": 80}]);
    f.seed(&json!({
        "load_balancers": [
            {"id": "ids", "type": "REGIONAL", "region": "nyc1", "forwarding_rules": rules, "droplet_ids": [1]},
            {"id": "tagged", "type": "REGIONAL", "region": "nyc1", "forwarding_rules": rules, "droplet_ids": [], "tag": "web"}],
        "domains": {"example.com": [{"id": 5, "type": "A", "name": "www", "data": "192.0.2.1", "ttl": 60}]}
    }));
    f
}

async fn call(
    f: &FakeDo,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut req = reqwest::Client::new().request(method, format!("{}{path}", f.url()));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let v = r.json().await.unwrap_or(Value::Null);
    (status, v, headers)
}

#[tokio::test]
async fn requests_without_the_bearer_token_are_refused() {
    let f = fake().await;
    assert_eq!(
        call(
            &f,
            reqwest::Method::GET,
            "/v2/load_balancers/ids",
            None,
            None
        )
        .await
        .0,
        401
    );
    assert_eq!(
        call(
            &f,
            reqwest::Method::GET,
            "/v2/load_balancers/ids",
            Some("wrong"),
            None
        )
        .await
        .0,
        401
    );
    assert_eq!(
        call(
            &f,
            reqwest::Method::GET,
            "/v2/load_balancers/ids",
            Some(TOKEN),
            None
        )
        .await
        .0,
        200
    );
}

#[tokio::test]
async fn the_seed_articles_put_with_only_droplet_ids_is_rejected() {
    let f = fake().await;
    let (s, v, _) = call(
        &f,
        reqwest::Method::PUT,
        "/v2/load_balancers/ids",
        Some(TOKEN),
        Some(json!({"droplet_ids": [2]})),
    )
    .await;
    assert_eq!(s, 422, "{v}");
    // A whole object with both droplet_ids and tag is rejected too; with exactly one it passes.
    let mut lb = json!({"name": "x", "region": "nyc1", "forwarding_rules": [{"entry_port": 80}], "droplet_ids": [2], "tag": "web"});
    assert_eq!(
        call(
            &f,
            reqwest::Method::PUT,
            "/v2/load_balancers/ids",
            Some(TOKEN),
            Some(lb.clone())
        )
        .await
        .0,
        422
    );
    lb.as_object_mut().unwrap().remove("tag");
    assert_eq!(
        call(
            &f,
            reqwest::Method::PUT,
            "/v2/load_balancers/ids",
            Some(TOKEN),
            Some(lb.clone())
        )
        .await
        .0,
        200
    );
    lb.as_object_mut().unwrap().remove("region");
    assert_eq!(
        call(
            &f,
            reqwest::Method::PUT,
            "/v2/load_balancers/ids",
            Some(TOKEN),
            Some(lb)
        )
        .await
        .0,
        422
    );
    assert_eq!(f.load_balancer("ids").unwrap()["droplet_ids"], json!([2]));
}

#[tokio::test]
async fn droplet_changes_answer_204_and_422_on_a_tag_based_load_balancer() {
    let f = fake().await;
    let add = json!({"droplet_ids": [7]});
    assert_eq!(
        call(
            &f,
            reqwest::Method::POST,
            "/v2/load_balancers/ids/droplets",
            Some(TOKEN),
            Some(add.clone())
        )
        .await
        .0,
        204
    );
    assert_eq!(
        f.load_balancer("ids").unwrap()["droplet_ids"],
        json!([1, 7])
    );
    assert_eq!(
        call(
            &f,
            reqwest::Method::DELETE,
            "/v2/load_balancers/ids/droplets",
            Some(TOKEN),
            Some(json!({"droplet_ids": [1]}))
        )
        .await
        .0,
        204
    );
    assert_eq!(f.load_balancer("ids").unwrap()["droplet_ids"], json!([7]));
    assert_eq!(
        call(
            &f,
            reqwest::Method::POST,
            "/v2/load_balancers/tagged/droplets",
            Some(TOKEN),
            Some(add)
        )
        .await
        .0,
        422
    );
}

#[tokio::test]
async fn a_record_patch_needs_its_type_and_a_ttl_of_at_least_30() {
    let f = fake().await;
    let p = "/v2/domains/example.com/records/5";
    assert_eq!(
        call(
            &f,
            reqwest::Method::PATCH,
            p,
            Some(TOKEN),
            Some(json!({"data": "192.0.2.9"}))
        )
        .await
        .0,
        422
    );
    assert_eq!(
        call(
            &f,
            reqwest::Method::PATCH,
            p,
            Some(TOKEN),
            Some(json!({"type": "A", "data": "192.0.2.9", "ttl": 10}))
        )
        .await
        .0,
        422
    );
    assert_eq!(
        call(
            &f,
            reqwest::Method::PATCH,
            p,
            Some(TOKEN),
            Some(json!({"type": "AAAA", "data": "2001:db8::1"}))
        )
        .await
        .0,
        422
    );
    let (s, v, _) = call(
        &f,
        reqwest::Method::PATCH,
        p,
        Some(TOKEN),
        Some(json!({"type": "A", "data": "192.0.2.9", "ttl": 30})),
    )
    .await;
    assert_eq!(
        (s, v["domain_record"]["data"].as_str()),
        (200, Some("192.0.2.9"))
    );
}

#[tokio::test]
async fn the_rate_limit_is_announced_and_enforced() {
    let f = fake().await; // 20 a minute for this test
    for i in 0..20u32 {
        let (s, _, h) = call(
            &f,
            reqwest::Method::GET,
            "/v2/load_balancers/ids",
            Some(TOKEN),
            None,
        )
        .await;
        assert_eq!(s, 200);
        assert_eq!(h["ratelimit-limit"], "20");
        assert_eq!(
            h["ratelimit-remaining"].to_str().unwrap(),
            (19 - i).to_string()
        );
        assert!(h.contains_key("ratelimit-reset"));
    }
    assert_eq!(
        call(
            &f,
            reqwest::Method::GET,
            "/v2/load_balancers/ids",
            Some(TOKEN),
            None
        )
        .await
        .0,
        429
    );
}

#[tokio::test]
async fn injected_faults_hit_the_next_matching_requests_only() {
    let f = fake().await;
    f.inject(
        Fault::RateLimited { retry_after: 3 },
        1,
        Some(reqwest::Method::GET),
    );
    f.inject(Fault::Busy, 1, Some(reqwest::Method::PUT));
    let (s, _, h) = call(
        &f,
        reqwest::Method::GET,
        "/v2/load_balancers/ids",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!((s, h["retry-after"].to_str().unwrap()), (429, "3"));
    assert_eq!(
        call(
            &f,
            reqwest::Method::GET,
            "/v2/load_balancers/ids",
            Some(TOKEN),
            None
        )
        .await
        .0,
        200
    );
    let lb = json!({"name": "x", "region": "nyc1", "forwarding_rules": [{"entry_port": 80}], "droplet_ids": [3]});
    let (s, v, _) = call(
        &f,
        reqwest::Method::PUT,
        "/v2/load_balancers/ids",
        Some(TOKEN),
        Some(lb.clone()),
    )
    .await;
    assert_eq!(s, 422);
    assert!(v["message"].as_str().unwrap().contains("being updated"));
    assert_eq!(
        call(
            &f,
            reqwest::Method::PUT,
            "/v2/load_balancers/ids",
            Some(TOKEN),
            Some(lb)
        )
        .await
        .0,
        200
    );
    let statuses: Vec<u16> = f.log().iter().map(|l| l.status).collect();
    assert_eq!(statuses, vec![429, 200, 422, 200]);
}
