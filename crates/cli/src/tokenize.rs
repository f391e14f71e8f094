//! `sprout tokenize`: the token ids of a text, without BOS or other added special tokens.

use anyhow::Result;
use clap::Args;

use crate::model_arg::ModelArgs;

/// `sprout tokenize --model M [--json] [--parse-special] -- TEXT`.
#[derive(Args, Debug)]
pub struct TokenizeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Print `{"ids":[...]}` instead of one `id<TAB>piece` line per token.
    #[arg(long)]
    json: bool,
    /// Match special tokens such as `<|im_start|>` written in the text.
    #[arg(long)]
    parse_special: bool,
    /// The text (read from stdin when absent).
    text: Option<String>,
}

pub fn run(args: TokenizeArgs) -> Result<()> {
    let text = match args.text {
        Some(t) => t,
        None => std::io::read_to_string(std::io::stdin())?,
    };
    let bundle = args.model.load()?;
    let tok = &bundle.prompt.tokenizer;
    let ids = tok.encode(&text, args.parse_special);
    if args.json {
        println!("{}", serde_json::json!({ "ids": ids }));
    } else {
        for id in ids {
            println!("{id}\t{:?}", String::from_utf8_lossy(tok.token_bytes(id)));
        }
    }
    Ok(())
}
