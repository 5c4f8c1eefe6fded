//! Text in and out of a model: its `tokenizer.json`, its chat template (rendered with minijinja
//! the way transformers renders it: `trim_blocks`, `lstrip_blocks`, Python string methods), and
//! the incremental decoding that turns a stream of token ids into text deltas.

use std::path::Path;

use minijinja::{Environment, Error as TemplateError, ErrorKind};
use serde::Deserialize;
use serde_json::Value;
use tokenizers::Tokenizer;

use crate::error::{ModelError, RequestError};

/// A model's tokenizer with what its config files say about special tokens and chat.
pub struct TextCodec {
    tokenizer: Tokenizer,
    template: Option<Environment<'static>>,
    bos_token: Option<String>,
    eos_token: Option<String>,
    /// Token ids that end generation: config.json's and generation_config.json's
    /// `eos_token_id`, and the tokenizer's `eos_token`.
    pub eos_ids: Vec<u32>,
}

const TEMPLATE: &str = "chat";

impl TextCodec {
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        let path = dir.join("tokenizer.json");
        let mut tokenizer = Tokenizer::from_file(&path).map_err(|e| ModelError::Tokenizer {
            path: path.clone(),
            message: e.to_string(),
        })?;
        // Padding and truncation saved in tokenizer.json would pad every input to a fixed
        // length or cut it silently; the server batches and checks lengths itself.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| ModelError::Tokenizer {
                path: path.clone(),
                message: e.to_string(),
            })?;
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg: TokenizerConfig = if cfg_path.exists() {
            crate::model::read_json(&cfg_path)?
        } else {
            TokenizerConfig::default()
        };
        let bos_token = cfg.bos_token.as_ref().and_then(SpecialToken::content);
        let eos_token = cfg.eos_token.as_ref().and_then(SpecialToken::content);

        // transformers 4.43+ writes the template to chat_template.jinja; older versions keep it
        // in tokenizer_config.json, as a string or a list of named templates.
        let jinja = dir.join("chat_template.jinja");
        let source = if jinja.exists() {
            Some(
                std::fs::read_to_string(&jinja).map_err(|source| ModelError::Io {
                    path: jinja.clone(),
                    source,
                })?,
            )
        } else {
            match cfg.chat_template {
                Some(ChatTemplateField::One(s)) => Some(s),
                Some(ChatTemplateField::Named(list)) => list
                    .iter()
                    .find(|t| t.name == "default")
                    .or(list.first())
                    .map(|t| t.template.clone()),
                None => None,
            }
        };
        let template = source.map(compile_template).transpose()?;

        let mut eos_ids = Vec::new();
        for file in ["config.json", "generation_config.json"] {
            let p = dir.join(file);
            if p.exists() {
                let v: Value = crate::model::read_json(&p)?;
                match v.get("eos_token_id") {
                    Some(Value::Number(n)) => eos_ids.extend(n.as_u64().map(|n| n as u32)),
                    Some(Value::Array(a)) => {
                        eos_ids.extend(a.iter().filter_map(Value::as_u64).map(|n| n as u32))
                    }
                    _ => {}
                }
            }
        }
        if let Some(id) = eos_token.as_deref().and_then(|t| tokenizer.token_to_id(t)) {
            eos_ids.push(id);
        }
        eos_ids.sort_unstable();
        eos_ids.dedup();
        Ok(Self {
            tokenizer,
            template,
            bos_token,
            eos_token,
            eos_ids,
        })
    }

    pub fn has_chat_template(&self) -> bool {
        self.template.is_some()
    }

    /// Renders `messages` (OpenAI chat messages, content already flattened to text) with the
    /// chat template and a generation prompt.
    pub fn render_chat(
        &self,
        messages: &[Value],
        tools: Option<&Value>,
    ) -> Result<String, RequestError> {
        let env = self.template.as_ref().ok_or_else(|| {
            RequestError::invalid(
                "model",
                "this model has no chat template (tokenizer_config.json has no chat_template); use /v1/completions",
            )
        })?;
        let tmpl = env
            .get_template(TEMPLATE)
            .map_err(|e| RequestError::unavailable(format!("chat template: {e}")))?;
        let ctx = minijinja::context! {
            messages => messages,
            tools => tools,
            add_generation_prompt => true,
            bos_token => self.bos_token.as_deref().unwrap_or(""),
            eos_token => self.eos_token.as_deref().unwrap_or(""),
        };
        tmpl.render(ctx).map_err(|e| {
            // raise_exception() in a template is the model's own rule about the conversation.
            let detail = e
                .detail()
                .map(str::to_owned)
                .unwrap_or_else(|| e.to_string());
            RequestError::invalid(
                "messages",
                format!("the chat template refused these messages: {detail}"),
            )
        })
    }

    /// Token ids of `text`; `special` adds the tokenizer's special tokens (BOS), as for a plain
    /// completion prompt. A rendered chat template already holds them.
    pub fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>, RequestError> {
        self.tokenizer
            .encode(text, special)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| {
                RequestError::invalid("prompt", format!("the tokenizer failed on the input: {e}"))
            })
    }

    pub fn decode(&self, ids: &[u32]) -> String {
        self.tokenizer.decode(ids, true).unwrap_or_default()
    }
}

fn compile_template(source: String) -> Result<Environment<'static>, ModelError> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    minijinja_contrib::add_to_environment(&mut env);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |message: String| -> Result<String, TemplateError> {
            Err(TemplateError::new(ErrorKind::InvalidOperation, message))
        },
    );
    env.add_template_owned(TEMPLATE, source)
        .map_err(|e| ModelError::Template(e.to_string()))?;
    Ok(env)
}

#[derive(Default, Deserialize)]
struct TokenizerConfig {
    #[serde(default)]
    bos_token: Option<SpecialToken>,
    #[serde(default)]
    eos_token: Option<SpecialToken>,
    #[serde(default)]
    chat_template: Option<ChatTemplateField>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum SpecialToken {
    Plain(String),
    Added { content: String },
    Null(()),
}

impl SpecialToken {
    fn content(&self) -> Option<String> {
        match self {
            Self::Plain(s) | Self::Added { content: s } => Some(s.clone()),
            Self::Null(()) => None,
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ChatTemplateField {
    One(String),
    Named(Vec<NamedTemplate>),
}

#[derive(Deserialize)]
struct NamedTemplate {
    name: String,
    template: String,
}

/// Turns generated token ids into text deltas as they come, holding back ids that end inside
/// a multi-byte character or whose text depends on the next token (the prefix/read offsets of
/// text-generation-inference).
#[derive(Default)]
pub struct StreamDecoder {
    ids: Vec<u32>,
    prefix: usize,
    read: usize,
}

impl StreamDecoder {
    /// Adds one token; returns the text it completes, if any.
    pub fn push(&mut self, codec: &TextCodec, id: u32) -> Option<String> {
        self.ids.push(id);
        let before = codec.decode(&self.ids[self.prefix..self.read]);
        let now = codec.decode(&self.ids[self.prefix..]);
        if now.len() > before.len() && !now.ends_with('\u{FFFD}') {
            let delta = now.get(before.len()..).map(str::to_owned)?;
            self.prefix = self.read;
            self.read = self.ids.len();
            Some(delta)
        } else {
            None
        }
    }

    /// Text of tokens still held back when generation ends.
    pub fn finish(&mut self, codec: &TextCodec) -> Option<String> {
        let before = codec.decode(&self.ids[self.prefix..self.read]);
        let now = codec.decode(&self.ids[self.prefix..]);
        self.prefix = self.ids.len();
        self.read = self.ids.len();
        now.get(before.len()..)
            .filter(|d| !d.is_empty())
            .map(str::to_owned)
    }
}

/// Stop sequences over generated text: finds the first one, and tells how much text is safe to
/// send while a stop sequence might still be forming at the end.
pub struct StopMatcher {
    stops: Vec<String>,
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
        }
    }

    /// Where the earliest stop sequence begins in `text`, searching from `from` (minus the
    /// longest stop's length, so one that straddles the last delta is found).
    pub fn find(&self, text: &str, from: usize) -> Option<usize> {
        let longest = self.stops.iter().map(String::len).max()?;
        let mut start = from.saturating_sub(longest);
        while !text.is_char_boundary(start) {
            start -= 1;
        }
        self.stops
            .iter()
            .filter_map(|s| text[start..].find(s.as_str()).map(|p| p + start))
            .min()
    }

    /// How many bytes of `text` can be sent: all but the longest suffix that begins a stop
    /// sequence.
    pub fn safe_len(&self, text: &str) -> usize {
        let mut hold = 0;
        for s in &self.stops {
            for k in (1..s.len().min(text.len() + 1)).rev() {
                if k > hold && s.is_char_boundary(k) && text.ends_with(&s[..k]) {
                    hold = k;
                    break;
                }
            }
        }
        text.len() - hold
    }
}

#[cfg(test)]
mod tests {
    use super::StopMatcher;

    #[test]
    fn stop_matcher_finds_straddling_stops_and_holds_back_prefixes() {
        let m = StopMatcher::new(vec!["END".into(), "\n\n".into()]);
        assert_eq!(m.find("abcEN", 3), None);
        assert_eq!(m.find("abcEND", 5), Some(3));
        assert_eq!(m.find("a\n\nEND", 0), Some(1));
        assert_eq!(m.safe_len("abcEN"), 3);
        assert_eq!(m.safe_len("abc\n"), 3);
        assert_eq!(m.safe_len("abc"), 3);
        let cjk = StopMatcher::new(vec!["停止".into()]);
        assert_eq!(cjk.safe_len("好停"), "好".len());
        assert_eq!(cjk.find("好停止", "好停".len()), Some("好".len()));
    }
}
