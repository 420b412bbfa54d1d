//! Runs the fake DigitalOcean API for the demo.
//!
//! Usage: `fake-digitalocean ADDR TOKEN_FILE SEED_JSON`. The seed is
//! `{"load_balancers": [...], "domains": {"example.com": [records...]}}`. Prints the bound address.

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(token_file), Some(seed_file)) = (args.next(), args.next(), args.next())
    else {
        eprintln!("usage: fake-digitalocean ADDR TOKEN_FILE SEED_JSON");
        std::process::exit(2);
    };
    let token = std::fs::read_to_string(&token_file).expect("read token file");
    let seed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&seed_file).expect("read seed"))
            .expect("seed is JSON");
    let fake = fake_digitalocean::FakeDo::start_on(&addr, token.trim())
        .await
        .expect("bind");
    fake.seed(&seed);
    println!("{}", fake.addr());
    tokio::signal::ctrl_c().await.ok();
}
