//! The HTTP server end to end: a real `cordon-inference` process on a loopback port, spoken to
//! over HTTP as an OpenAI client would.

mod common;

use serde_json::{Value, json};

use common::{Server, fixtures, ids, model_tables};

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn post(server: &Server, path: &str, body: Value) -> (u16, Value) {
    let r = client()
        .post(format!("{}{path}", server.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

async fn get(server: &Server, path: &str) -> reqwest::Response {
    client()
        .get(format!("{}{path}", server.base))
        .send()
        .await
        .unwrap()
}

/// The `data:` payloads of a server-sent event stream.
async fn stream(server: &Server, path: &str, body: Value) -> Vec<String> {
    let r = client()
        .post(format!("{}{path}", server.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let text = r.text().await.unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

fn chat_body(content: &str, extra: Value) -> Value {
    let mut body = json!({"model": "chat", "messages": [{"role": "user", "content": content}]});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

fn stream_text(events: &[String]) -> (String, Option<String>, Option<Value>) {
    let mut text = String::new();
    let mut finish = None;
    let mut usage = None;
    for e in events.iter().filter(|e| *e != "[DONE]") {
        let v: Value = serde_json::from_str(e).unwrap();
        if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
            usage = Some(u.clone());
        }
        for c in v["choices"].as_array().unwrap() {
            text.push_str(
                c["delta"]["content"]
                    .as_str()
                    .or(c["text"].as_str())
                    .unwrap_or(""),
            );
            if let Some(f) = c["finish_reason"].as_str() {
                finish = Some(f.to_owned());
            }
        }
    }
    (text, finish, usage)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_stream_and_not_agree_and_count_usage() {
    let server = Server::start(&model_tables(""));
    let messages = fixtures().reference["messages"].clone();
    let prompt_tokens = ids(&fixtures().reference["qwen2"]["chat_ids"]).len();
    let body = json!({"model": "chat", "messages": messages, "temperature": 0, "max_tokens": 24, "ignore_eos": true});
    let (status, v) = post(&server, "/v1/chat/completions", body.clone()).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["prompt_tokens"], prompt_tokens);
    assert_eq!(v["usage"]["completion_tokens"], 24);
    assert_eq!(v["usage"]["total_tokens"], prompt_tokens + 24);
    let text = v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!text.is_empty());

    let mut sbody = body.clone();
    sbody["stream"] = json!(true);
    sbody["stream_options"] = json!({"include_usage": true});
    let events = stream(&server, "/v1/chat/completions", sbody).await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    let first: Value = serde_json::from_str(&events[0]).unwrap();
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    assert!(
        events.len() > 4,
        "the answer came in several chunks: {events:?}"
    );
    let (streamed, finish, usage) = stream_text(&events);
    assert_eq!(streamed, text);
    assert_eq!(finish.as_deref(), Some("length"));
    assert_eq!(usage.unwrap()["completion_tokens"], 24);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_sequences_cut_the_text_streamed_or_not() {
    let server = Server::start(&model_tables(""));
    let base = json!({"temperature": 0, "max_tokens": 40, "ignore_eos": true});
    let (_, v) = post(
        &server,
        "/v1/chat/completions",
        chat_body("Hello world", base.clone()),
    )
    .await;
    let full = v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    let chars: Vec<char> = full.chars().collect();
    assert!(chars.len() > 12, "{full:?}");
    let stop: String = chars[8..11].iter().collect();
    let expected = &full[..full.find(&stop).unwrap()];
    let mut with_stop = base.clone();
    with_stop["stop"] = json!([stop, "never-appears"]);
    let (_, v) = post(
        &server,
        "/v1/chat/completions",
        chat_body("Hello world", with_stop.clone()),
    )
    .await;
    assert_eq!(v["choices"][0]["message"]["content"], expected);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() < 40);
    with_stop["stream"] = json!(true);
    let events = stream(
        &server,
        "/v1/chat/completions",
        chat_body("Hello world", with_stop),
    )
    .await;
    let (text, finish, _) = stream_text(&events);
    assert_eq!(text, expected);
    assert_eq!(finish.as_deref(), Some("stop"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeds_repeat_and_concurrent_requests_equal_sequential_ones() {
    let server = Server::start(&model_tables(""));
    let sampled = |seed: u64, content: &str| {
        chat_body(
            content,
            json!({"temperature": 1.0, "top_p": 0.9, "seed": seed, "max_tokens": 20, "ignore_eos": true}),
        )
    };
    let text = |v: &Value| {
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let a = text(
        &post(&server, "/v1/chat/completions", sampled(7, "Hello"))
            .await
            .1,
    );
    let b = text(
        &post(&server, "/v1/chat/completions", sampled(7, "Hello"))
            .await
            .1,
    );
    let c = text(
        &post(&server, "/v1/chat/completions", sampled(8, "Hello"))
            .await
            .1,
    );
    assert_eq!(a, b);
    assert_ne!(a, c);

    let bodies: Vec<Value> = (0..6)
        .map(|i| {
            if i % 2 == 0 {
                sampled(100 + i, &format!("request {i}: 你好"))
            } else {
                chat_body(
                    &format!("greedy {i}"),
                    json!({"temperature": 0, "max_tokens": 16 + i, "ignore_eos": true}),
                )
            }
        })
        .collect();
    let mut sequential = Vec::new();
    for b in &bodies {
        sequential.push(text(
            &post(&server, "/v1/chat/completions", b.clone()).await.1,
        ));
    }
    let concurrent = futures::future::join_all(
        bodies
            .iter()
            .map(|b| post(&server, "/v1/chat/completions", b.clone())),
    )
    .await;
    let concurrent: Vec<String> = concurrent.iter().map(|(_, v)| text(v)).collect();
    assert_eq!(concurrent, sequential);
    let metrics = get(&server, "/metrics").await.text().await.unwrap();
    // Some step ran more than one sequence at once.
    let batched_steps = metric(
        &metrics,
        "cordon_inference_batch_size_count{model=\"chat\"}",
    ) - metric(
        &metrics,
        "cordon_inference_batch_size_bucket{model=\"chat\",le=\"1\"}",
    );
    assert!(batched_steps > 0.0, "{metrics}");
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).map(|v| v.trim().parse().unwrap()))
        .unwrap_or_else(|| panic!("{name} missing"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_429() {
    let server = Server::start(&model_tables("max_batch = 1\nmax_queue = 1"));
    let body = chat_body(
        "Hello",
        json!({"temperature": 0, "max_tokens": 200, "ignore_eos": true}),
    );
    // The first request must be running before the others arrive, or the second could find the
    // queue still holding the first and be refused too (seen on a loaded machine).
    let first = post(&server, "/v1/chat/completions", body.clone());
    let rest = async {
        let running = "cordon_inference_active_sequences{model=\"chat\"}";
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let metrics = get(&server, "/metrics").await.text().await.unwrap();
            if metrics.contains(running) && metric(&metrics, running) >= 1.0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the first request never ran: {metrics}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        futures::future::join_all(
            (0..7).map(|_| post(&server, "/v1/chat/completions", body.clone())),
        )
        .await
    };
    let (first, rest) = tokio::join!(first, rest);
    let answers: Vec<_> = std::iter::once(first).chain(rest).collect();
    let refused: Vec<_> = answers.iter().filter(|(s, _)| *s == 429).collect();
    let served: Vec<_> = answers.iter().filter(|(s, _)| *s == 200).collect();
    assert!(!refused.is_empty(), "{answers:?}");
    assert!(
        served.len() >= 2,
        "one running and one queued are served: {answers:?}"
    );
    assert_eq!(refused.len() + served.len(), 8);
    assert_eq!(refused[0].1["error"]["code"], "queue_full");
    assert_eq!(refused[0].1["error"]["type"], "rate_limit_error");
    for (_, v) in served {
        assert_eq!(v["usage"]["completion_tokens"], 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_openai_errors() {
    let server = Server::start(&model_tables(""));
    let raw = |path: &str, body: &'static str| {
        let url = format!("{}{path}", server.base);
        async move {
            let r = client()
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (s, v) = raw("/v1/chat/completions", "{not json").await;
    assert_eq!(s, 400);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON"),
        "{v}"
    );
    let (s, v) = raw("/v1/chat/completions", r#"{"model":"chat"}"#).await;
    assert_eq!(s, 400);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("messages"),
        "{v}"
    );
    let (s, v) = post(
        &server,
        "/v1/chat/completions",
        json!({"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (404, Some("model_not_found"))
    );
    let (s, v) = post(
        &server,
        "/v1/chat/completions",
        chat_body("x", json!({"temperature": 5})),
    )
    .await;
    assert_eq!(
        (s, v["error"]["param"].as_str()),
        (400, Some("temperature"))
    );
    let long = "the private inference server speaks ".repeat(60);
    let (s, v) = post(&server, "/v1/chat/completions", chat_body(&long, json!({}))).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("context_length_exceeded")),
        "{v}"
    );
    let (s, v) = post(
        &server,
        "/v1/completions",
        json!({"model": "base", "prompt": long}),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("context_length_exceeded")),
        "{v}"
    );
    let (s, v) = post(
        &server,
        "/v1/embeddings",
        json!({"model": "minilm", "input": ["short", long]}),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str(), v["error"]["param"].as_str()),
        (400, Some("context_length_exceeded"), Some("input")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("input 1 "),
        "{v}"
    );
    let (s, v) = post(
        &server,
        "/v1/embeddings",
        json!({"model": "chat", "input": "x"}),
    )
    .await;
    assert_eq!((s, v["error"]["param"].as_str()), (400, Some("model")));
    let (s, v) = post(
        &server,
        "/v1/chat/completions",
        json!({"model": "minilm", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!((s, v["error"]["param"].as_str()), (400, Some("model")));
    let (s, v) = post(&server, "/v1/chat/completions", json!({"model": "base", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]})).await;
    assert_eq!(s, 400, "{v}");
    let r = get(&server, "/v1/chat/completions").await;
    assert_eq!(r.status(), 405);
    let r = get(&server, "/v2/nothing").await;
    assert_eq!(r.status(), 404);
    // Still serving after all of that.
    let (s, _) = post(
        &server,
        "/v1/chat/completions",
        chat_body("x", json!({"max_tokens": 2})),
    )
    .await;
    assert_eq!(s, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_embeddings_models_health_and_metrics() {
    let server = Server::start(&model_tables(""));
    let (s, v) = post(&server, "/v1/completions", json!({"model": "base", "prompt": ["Hello world", "你好"], "max_tokens": 5, "temperature": 0, "ignore_eos": true})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"].as_array().unwrap().len(), 2);
    assert_eq!(v["choices"][1]["index"], 1);
    assert_eq!(v["usage"]["completion_tokens"], 10);
    let events = stream(&server, "/v1/completions", json!({"model": "base", "prompt": "Hello world", "max_tokens": 5, "temperature": 0, "ignore_eos": true, "stream": true})).await;
    let (text, finish, _) = stream_text(&events);
    assert_eq!(finish.as_deref(), Some("length"));
    let (_, alone) = post(&server, "/v1/completions", json!({"model": "base", "prompt": "Hello world", "max_tokens": 5, "temperature": 0, "ignore_eos": true})).await;
    assert_eq!(alone["choices"][0]["text"], text);
    assert_eq!(
        v["choices"][0]["text"], text,
        "batched with another prompt, the same text"
    );

    let reference = &fixtures().reference["minilm"];
    let sentences = reference["sentences"].clone();
    for format in ["float", "base64"] {
        let (s, v) = post(
            &server,
            "/v1/embeddings",
            json!({"model": "minilm", "input": sentences, "encoding_format": format}),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        for (i, item) in v["data"].as_array().unwrap().iter().enumerate() {
            let got: Vec<f32> = match &item["embedding"] {
                Value::String(b64) => {
                    use base64::Engine;
                    base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .unwrap()
                        .chunks(4)
                        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                        .collect()
                }
                arr => serde_json::from_value(arr.clone()).unwrap(),
            };
            let want: Vec<f32> = serde_json::from_value(reference["vectors"][i].clone()).unwrap();
            let cos: f32 = got.iter().zip(&want).map(|(a, b)| a * b).sum::<f32>()
                / (got.iter().map(|x| x * x).sum::<f32>().sqrt()
                    * want.iter().map(|x| x * x).sum::<f32>().sqrt());
            assert!(cos >= 0.9999, "{format} {i}: {cos}");
        }
        assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 20);
    }

    let models: Value = get(&server, "/v1/models").await.json().await.unwrap();
    let names: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["base", "chat", "minilm"]);
    let health = get(&server, "/healthz").await;
    assert_eq!(health.status(), 200);
    let metrics = get(&server, "/metrics").await.text().await.unwrap();
    for name in [
        "cordon_inference_queue_depth{model=\"base\"}",
        "cordon_inference_batch_size_count{model=\"base\"}",
        "cordon_inference_tokens_per_second{model=\"base\"}",
        "cordon_inference_time_to_first_token_seconds_count{model=\"base\"}",
        "cordon_inference_generated_tokens_total{model=\"base\"}",
    ] {
        metric(&metrics, name);
    }
    assert_eq!(
        metric(
            &metrics,
            "cordon_inference_generated_tokens_total{model=\"base\"}"
        ),
        20.0
    );
    assert_eq!(
        metric(
            &metrics,
            "cordon_inference_requests_total{api=\"embeddings\",model=\"minilm\",status=\"200\"}"
        ),
        2.0
    );
}
