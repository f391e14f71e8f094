//! A grounded answer on the real default model (SPROUT_TEST_QWEN; skipped when absent unless
//! SPROUT_REQUIRE_MODELS is set): candidates retrieved from the eco catalog, the answer
//! grammar, the scheduler with jump-forward — three distinct existing challenges every time.

use std::path::PathBuf;
use std::sync::Arc;

use sprout_engine::bundle::{LoadOptions, ModelBundle};
use sprout_engine::chat_template::ChatMessage;
use sprout_engine::engine::{Engine, EngineConfig};
use sprout_engine::generation::StopConditions;
use sprout_engine::grammar::{GrammarCompiler, GrammarSpec};
use sprout_engine::sampler::SamplingParams;
use sprout_engine::scheduler::{GenerationRequest, Scheduler, SchedulerConfig};
use sprout_recommend::answer::{answer_grammar, parse_answer, AnswerPiece, AnswerStream};
use sprout_recommend::{Catalog, LexicalIndex, TagFilter};

fn qwen() -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var("SPROUT_TEST_QWEN").unwrap_or_default());
    if p.is_file() {
        return Some(p);
    }
    assert!(
        std::env::var_os("SPROUT_REQUIRE_MODELS").is_none(),
        "SPROUT_TEST_QWEN missing"
    );
    eprintln!("skipping: set SPROUT_TEST_QWEN");
    None
}

#[test]
fn grounded_answers_pick_three_distinct_candidates() {
    let Some(path) = qwen() else { return };
    let b = ModelBundle::open(&path, &LoadOptions::default()).unwrap();
    let vocab = b.model.config.vocab_size;
    let engine = Engine::new(
        b.model,
        &EngineConfig {
            threads: 2,
            kv_block_tokens: 16,
            kv_capacity_tokens: 8192,
        },
    );
    let tok = b.prompt.tokenizer.clone();
    let (sched, _join) = Scheduler::spawn(engine, tok.clone(), SchedulerConfig::default()).unwrap();
    let grammars = GrammarCompiler::new(Arc::clone(&tok), vocab, true).unwrap();
    let catalog = Catalog::eco();
    let index = LexicalIndex::build_in_memory(&catalog).unwrap();
    let cases = [
        ("환경을 위해 분리수거를 잘하고 싶어요", "ZERO_WASTE"),
        ("회사에서 전기를 아끼는 방법이 궁금해요", "ENERGY_SAVING"),
        ("산책하면서 쓰레기를 줍고 싶어요", "PLOGGING"),
    ];
    for (message, category) in cases {
        let filters = [TagFilter::new("category", category)];
        let hits = index.search(message, 6, &filters).unwrap();
        let mut titles: Vec<String> = hits
            .iter()
            .map(|(i, _)| catalog.items()[*i].title.clone())
            .collect();
        // Fewer than six hits: fill from the category, so there are always candidates.
        for it in catalog.items() {
            if titles.len() >= 6 {
                break;
            }
            if it.matches(&filters) && !titles.contains(&it.title) {
                titles.push(it.title.clone());
            }
        }
        let sentences = vec![
            "요청하신 내용에 맞는 친환경 챌린지를 추천합니다.".to_string(),
            "일상에서 쉽게 시작할 수 있는 챌린지를 추천합니다.".to_string(),
        ];
        let lark = answer_grammar(&sentences, &titles).unwrap();
        let t = std::time::Instant::now();
        let constraint = grammars
            .constraint(&GrammarSpec::Lark(lark))
            .expect("the answer grammar compiles");
        let compile_ms = t.elapsed().as_millis();
        let listing: String = titles.iter().map(|t| format!("- {t}\n")).collect();
        let prompt = b
            .prompt
            .chat_prompt(&[
                ChatMessage::new(
                    "system",
                    "당신은 친환경 챌린지를 추천하는 Leafresh 챗봇입니다. 후보 중에서 사용자에게 가장 알맞은 챌린지 세 개를 고르세요.",
                ),
                ChatMessage::new("user", format!("후보:\n{listing}\n요청: {message}")),
            ])
            .unwrap();
        let (tx, _rx) = std::sync::mpsc::channel();
        let t = std::time::Instant::now();
        let mut stream = AnswerStream::new();
        let mut pieces = Vec::new();
        let out = sched
            .generate_blocking(
                GenerationRequest {
                    prompt,
                    sampling: SamplingParams::default(),
                    stop: StopConditions {
                        max_tokens: 256,
                        ..Default::default()
                    },
                    constraint: Some(Box::new(constraint)),
                    timeout: None,
                    events: Box::new(tx),
                },
                |piece| {
                    pieces.extend(stream.push(piece));
                    true
                },
            )
            .expect("answers");
        let answer = parse_answer(&out.text, &titles).expect("a valid answer");
        let streamed: Vec<String> = pieces
            .iter()
            .filter_map(|p| match p {
                AnswerPiece::Pick(_, t) => Some(t.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(streamed, answer.picks, "the stream saw the same picks");
        assert!(sentences.contains(&answer.recommend));
        eprintln!(
            "{message}: {:?} in {} ms ({} tokens, {} forced; grammar compiled in {compile_ms} ms)",
            answer.picks,
            t.elapsed().as_millis(),
            out.usage.completion_tokens,
            out.usage.forced_tokens
        );
    }
}
