mod common;
use careflow_engine::*;

#[tokio::test]
async fn smoke() {
    let e = common::engine();
    let o = e.open(OpenSession { prefix: vec![ChatMessage::system("You are a helpful assistant.")], cache_prefix: true, ..Default::default() }).await.unwrap();
    println!("open {:?}", o.usage);
    let t = std::time::Instant::now();
    let out = e.turn(o.id, Turn { messages: vec![ChatMessage::user("What is the capital of France?")], generate: Some(GenerateParams::text(30)), ..Default::default() }).await.unwrap();
    println!("{:?} {:?} in {:?}", out.usage, out.generation.as_ref().map(|g| &g.text), t.elapsed());
    let schema = serde_json::json!({"type":"object","properties":{"disposition":{"enum":["emergency_now","routine","self_care"]},"reason":{"type":"string","maxLength":80}},"required":["disposition","reason"],"additionalProperties":false});
    let out = e.turn(o.id, Turn { messages: vec![ChatMessage::user("I have chest pain and sweating. Answer in JSON.")], generate: Some(GenerateParams::json(60, schema)), ..Default::default() }).await.unwrap();
    println!("{:?} {:?}", out.usage, out.generation.as_ref().map(|g| (&g.text, g.finish)));
    println!("{:?}", e.stats().await.unwrap());
}
