//! Hook properties that fail when the hook machinery is wrong: readers see what the
//! forward pass computes, writers change exactly what they claim, patches reproduce the
//! run they come from, gradients flow through writer parameters, and writers apply during
//! KV-cache generation.

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, IndexOp, Tensor, Var, D};
use candle_nn::VarBuilder;
use scalpel::model::generate::{argmax, generate, SamplingParams};
use scalpel::model::gguf::GgufFile;
use scalpel::model::gpt2::{Gpt2, Gpt2ConfigFile};
use scalpel::model::hooks::{AddTensor, PatchFrom, Scale};
use scalpel::model::llama::{Llama, LlamaConfig};
use scalpel::model::{HookPoint, Hooks, LoadedModel, Positions, Transformer, Units, Writer};

fn ids_tensor(ids: &[u32]) -> Tensor {
    Tensor::new(ids, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap()
}

fn run(m: &dyn Transformer, ids: &[u32], hooks: &Hooks) -> scalpel::model::ForwardOutput {
    m.forward(&ids_tensor(ids), None, hooks).unwrap()
}

fn check_resid_post_reproduces_logits(m: &LoadedModel, text: &str) {
    let ids = m.encode(text).unwrap();
    let last = HookPoint::ResidPost(m.model.info().n_layers - 1);
    let out = run(m.model.as_ref(), &ids, &Hooks::new().read(last));
    let resid = out.cache.get(last).expect("reader cached the activation");
    let again = m.model.unembed(resid).unwrap();
    let d = common::max_abs_diff(&again, &out.logits);
    assert!(d < 1e-5, "{}: {d}", m.name);
}

#[test]
fn last_resid_post_through_unembed_reproduces_the_logits() {
    check_resid_post_reproduces_logits(common::smollm2(), "The quick brown fox jumps over");
    check_resid_post_reproduces_logits(&common::tiny_gpt2(), "The quick brown fox jumps over");
}

/// Ablating head h of layer l (zeroing its `hook_z`) must change `hook_attn_out` by
/// exactly z_h · W_O[:, h]ᵀ, with W_O read straight from the weights file, and leave
/// everything upstream untouched.
fn check_head_ablation(m: &LoadedModel, ids: &[u32], layer: usize, head: usize, w_o: &Tensor) {
    let dh = m.model.info().d_head;
    let (z_pt, out_pt, pre_pt) = (
        HookPoint::AttnZ(layer),
        HookPoint::AttnOut(layer),
        HookPoint::ResidPre(layer),
    );
    let clean = run(
        m.model.as_ref(),
        ids,
        &Hooks::new().read(z_pt).read(out_pt).read(pre_pt),
    );
    let ablate = Hooks::new()
        .write(Writer::new(z_pt, Scale(0.0)).at_units(Units::only([head])))
        .read(out_pt)
        .read(pre_pt)
        .read(z_pt);
    let abl = run(m.model.as_ref(), ids, &ablate);
    assert_eq!(
        common::max_abs_diff(
            clean.cache.get(pre_pt).unwrap(),
            abl.cache.get(pre_pt).unwrap()
        ),
        0.0,
        "upstream of the ablation must not move"
    );
    // Only head `head` of hook_z was zeroed.
    let z_abl = abl.cache.get(z_pt).unwrap();
    assert_eq!(
        z_abl
            .i((.., .., head, ..))
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap(),
        0.0
    );
    let z_clean = clean.cache.get(z_pt).unwrap();
    for other in (0..m.model.info().n_heads).filter(|h| *h != head) {
        let d = common::max_abs_diff(
            &z_clean.i((.., .., other, ..)).unwrap(),
            &z_abl.i((.., .., other, ..)).unwrap(),
        );
        assert_eq!(d, 0.0, "head {other} must be untouched");
    }
    let z_h = z_clean.i((0, .., head, ..)).unwrap(); // [t, dh]
    let w_h = w_o.narrow(1, head * dh, dh).unwrap(); // [d, dh]
    let contribution = z_h.matmul(&w_h.t().unwrap()).unwrap(); // [t, d]
    let delta = (clean.cache.get(out_pt).unwrap() - abl.cache.get(out_pt).unwrap())
        .unwrap()
        .squeeze(0)
        .unwrap();
    let d = common::max_abs_diff(&delta, &contribution);
    let scale = contribution
        .abs()
        .unwrap()
        .max_keepdim(1)
        .unwrap()
        .max(0)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()[0];
    assert!(scale > 1e-3, "the head contributes something");
    assert!(
        d < 1e-5 * scale.max(1.0),
        "{}: |Δattn_out − z_h W_O,hᵀ| = {d}",
        m.name
    );
    // And the logits moved: the head mattered downstream.
    assert!(common::max_abs_diff(&clean.logits, &abl.logits) > 1e-4);
}

#[test]
fn zero_ablating_a_head_removes_exactly_its_contribution() {
    // GPT-2: c_proj is a Conv1D [in, out]; W_O as [out, in] is its transpose.
    let g = common::tiny_gpt2();
    let st = candle_core::safetensors::load(
        common::tiny_gpt2_dir().join("model.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let w_o = st["transformer.h.1.attn.c_proj.weight"].t().unwrap();
    let ids = g
        .encode("The mill was built in 1887 and has 42 windows.")
        .unwrap();
    check_head_ablation(&g, &ids, 1, 2, &w_o);

    // SmolLM2 (grouped-query attention): attn_output is stored [out, in] in the GGUF.
    let m = common::smollm2();
    let mut file = GgufFile::open(&m.path).unwrap();
    let w_o = file
        .tensor_f32("blk.7.attn_output.weight", &Device::Cpu)
        .unwrap();
    let ids = m
        .encode("The Eiffel Tower is located in the city of")
        .unwrap();
    check_head_ablation(m, &ids, 7, 4, &w_o);
}

/// `corrupt_at`: positions whose token is swapped for another to make the corrupt run.
fn check_patching_reproduces_clean(m: &LoadedModel, clean_text: &str, corrupt_at: &[usize]) {
    let clean_ids = m.encode(clean_text).unwrap();
    let mut corrupt_ids = clean_ids.clone();
    for &p in corrupt_at {
        corrupt_ids[p] = (corrupt_ids[p] + 101) % m.model.info().vocab_size as u32;
    }
    let n = m.model.info().n_layers;
    let mut points = vec![HookPoint::Embed];
    for l in 0..n {
        points.extend([
            HookPoint::ResidPost(l),
            HookPoint::AttnOut(l),
            HookPoint::MlpOut(l),
        ]);
    }
    let clean = run(
        m.model.as_ref(),
        &clean_ids,
        &Hooks::new().read_all(points.clone()),
    );
    let corrupt = run(m.model.as_ref(), &corrupt_ids, &Hooks::new());
    assert!(
        common::max_abs_diff(&clean.logits, &corrupt.logits) > 1e-2,
        "prompts must differ"
    );
    let patch = |p: HookPoint| Writer::new(p, PatchFrom(clean.cache.get(p).unwrap().clone()));
    // The whole residual stream at any one layer carries everything downstream.
    for l in [0, n / 2, n - 1] {
        let out = run(
            m.model.as_ref(),
            &corrupt_ids,
            &Hooks::new().write(patch(HookPoint::ResidPost(l))),
        );
        let d = common::max_abs_diff(&out.logits, &clean.logits);
        assert!(d < 1e-4, "{}: patching resid_post {l}: {d}", m.name);
    }
    // Every site that writes into the residual stream: embedding, each attention and MLP.
    let mut hooks = Hooks::new().write(patch(HookPoint::Embed));
    for l in 0..n {
        hooks = hooks
            .write(patch(HookPoint::AttnOut(l)))
            .write(patch(HookPoint::MlpOut(l)));
    }
    let out = run(m.model.as_ref(), &corrupt_ids, &hooks);
    let d = common::max_abs_diff(&out.logits, &clean.logits);
    assert!(d < 1e-4, "{}: patching every site: {d}", m.name);
    // Patching one position only is not enough (the test can fail).
    let partial = Writer::new(
        HookPoint::ResidPost(0),
        PatchFrom(clean.cache.get(HookPoint::ResidPost(0)).unwrap().clone()),
    )
    .at_positions(Positions::only([0]));
    let out = run(m.model.as_ref(), &corrupt_ids, &Hooks::new().write(partial));
    assert!(common::max_abs_diff(&out.logits, &clean.logits) > 1e-3);
}

#[test]
fn patching_every_site_from_a_clean_run_reproduces_its_logits() {
    check_patching_reproduces_clean(
        common::smollm2(),
        "The Eiffel Tower is in the city of",
        &[1, 2],
    );
    check_patching_reproduces_clean(&common::tiny_gpt2(), "The mill was built in 1887", &[1]);
}

/// Random weights of a tiny Llama (GQA: 4 heads / 2 kv heads), built through the loader.
fn tiny_llama_weights() -> (LlamaConfig, HashMap<String, Tensor>) {
    let cfg = LlamaConfig {
        d_model: 32,
        d_mlp: 48,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        d_head: 8,
        rms_eps: 1e-5,
        rope_theta: 10_000.0,
        vocab_size: 40,
        tie_embeddings: false,
        max_positions: 64,
    };
    let dev = Device::Cpu;
    let mut w = HashMap::new();
    let mut put = |name: String, shape: &[usize], mean: f64, std: f64| {
        w.insert(name, Tensor::randn(mean, std, shape, &dev).unwrap());
    };
    put("model.embed_tokens.weight".into(), &[40, 32], 0.0, 1.0);
    put("lm_head.weight".into(), &[40, 32], 0.0, 0.3);
    put("model.norm.weight".into(), &[32], 1.0, 0.1);
    for l in 0..2 {
        let p = |s: &str| format!("model.layers.{l}.{s}");
        put(p("self_attn.q_proj.weight"), &[32, 32], 0.0, 0.3);
        put(p("self_attn.k_proj.weight"), &[16, 32], 0.0, 0.3);
        put(p("self_attn.v_proj.weight"), &[16, 32], 0.0, 0.3);
        put(p("self_attn.o_proj.weight"), &[32, 32], 0.0, 0.3);
        put(p("mlp.gate_proj.weight"), &[48, 32], 0.0, 0.3);
        put(p("mlp.up_proj.weight"), &[48, 32], 0.0, 0.3);
        put(p("mlp.down_proj.weight"), &[32, 48], 0.0, 0.3);
        put(p("input_layernorm.weight"), &[32], 1.0, 0.1);
        put(p("post_attention_layernorm.weight"), &[32], 1.0, 0.1);
    }
    (cfg, w)
}

fn tiny_llama(cfg: &LlamaConfig, w: &HashMap<String, Tensor>, dtype: DType) -> Llama {
    Llama::load(
        VarBuilder::from_tensors(w.clone(), dtype, &Device::Cpu),
        cfg.clone(),
    )
    .unwrap()
}

fn tiny_gpt2_f64() -> Gpt2 {
    let dir = common::tiny_gpt2_dir();
    let cfg: Gpt2ConfigFile =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let cfg = cfg.into_config(&dir.join("config.json")).unwrap();
    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(
            &[dir.join("model.safetensors")],
            DType::F64,
            &Device::Cpu,
        )
    }
    .unwrap();
    Gpt2::load(vb, cfg).unwrap()
}

/// d loss / d v for a steering vector `v` added at one position of `point`, by autograd
/// and by central finite differences (f64 throughout, so the comparison is tight).
fn check_writer_gradient(m: &dyn Transformer, ids: &[u32], point: HookPoint, units: Units) {
    let d = match point {
        HookPoint::MlpPost(_) => m.info().d_mlp,
        _ => m.info().d_model,
    };
    // A fixed vector, not a random draw: the finite difference's error depends on where
    // it is taken, and a test must give the same verdict on every run.
    let v0: Vec<f64> = (0..d)
        .map(|i| 0.5 * (i as f64 * 0.73 + 0.4).sin())
        .collect();
    let v0 = Tensor::new(v0, &Device::Cpu).unwrap();
    let target = 3usize;
    let loss_of = |v: &Tensor| -> Tensor {
        let hooks = Hooks::new().write(
            Writer::new(point, AddTensor(v.clone()))
                .at_positions(Positions::only([1, ids.len() - 1]))
                .at_units(units.clone()),
        );
        let out = run(m, ids, &hooks);
        let last = out.logits.i((0, ids.len() - 1)).unwrap();
        candle_nn::ops::log_softmax(&last, D::Minus1)
            .unwrap()
            .i(target)
            .unwrap()
    };
    let var = Var::from_tensor(&v0).unwrap();
    let loss = loss_of(var.as_tensor());
    let grads = loss.backward().unwrap();
    let g = grads
        .get(var.as_tensor())
        .expect("the writer's Var received a gradient")
        .to_vec1::<f64>()
        .unwrap();
    let eps = 1e-5;
    let base = v0.to_vec1::<f64>().unwrap();
    let mut checked = 0;
    for k in [0, 1, d / 2, d - 1] {
        let mut plus = base.clone();
        plus[k] += eps;
        let mut minus = base.clone();
        minus[k] -= eps;
        let lp = loss_of(&Tensor::new(plus, &Device::Cpu).unwrap())
            .to_scalar::<f64>()
            .unwrap();
        let lm = loss_of(&Tensor::new(minus, &Device::Cpu).unwrap())
            .to_scalar::<f64>()
            .unwrap();
        let fd = (lp - lm) / (2.0 * eps);
        let selected = match &units {
            Units::All => true,
            Units::Only(s) => s.contains(&k),
        };
        if !selected {
            assert_eq!(g[k], 0.0, "unit {k} is outside the writer");
            continue;
        }
        assert!(
            fd.abs() > 1e-6,
            "{point}: finite difference too small to test at unit {k}: {fd} vs {}",
            g[k]
        );
        let rel = (g[k] - fd).abs() / fd.abs().max(1e-8);
        assert!(
            rel < 1e-5,
            "{point} unit {k}: autograd {} vs finite difference {fd}",
            g[k]
        );
        checked += 1;
    }
    assert!(checked >= 2);
}

#[test]
fn gradient_through_a_writer_var_matches_finite_differences() {
    let (cfg, w) = tiny_llama_weights();
    let llama = tiny_llama(&cfg, &w, DType::F64);
    let ids = [5u32, 17, 2, 33, 8, 21];
    check_writer_gradient(&llama, &ids, HookPoint::ResidPre(0), Units::All);
    check_writer_gradient(
        &llama,
        &ids,
        HookPoint::ResidMid(1),
        Units::only([0, 1, 16, 31]),
    );
    check_writer_gradient(&llama, &ids, HookPoint::MlpPost(0), Units::All);
    let gpt2 = tiny_gpt2_f64();
    check_writer_gradient(&gpt2, &ids, HookPoint::ResidMid(0), Units::All);
    check_writer_gradient(&gpt2, &ids, HookPoint::AttnOut(1), Units::only([0, 32]));
}

/// In f32 the forward pass uses candle's fused kernels unless autograd tracks an input;
/// a kernel without a backward pass would silently cut the gradient. So the f32 gradient
/// must equal the f64 (always composed) one.
#[test]
fn f32_forward_passes_gradients_through_every_kernel() {
    let (cfg, w) = tiny_llama_weights();
    let ids = [5u32, 17, 2, 33, 8, 21];
    let grad = |dtype: DType| -> Vec<f64> {
        let m = tiny_llama(&cfg, &w, dtype);
        let v = Var::from_tensor(&Tensor::ones(32, dtype, &Device::Cpu).unwrap()).unwrap();
        let hooks = Hooks::new().write(Writer::new(
            HookPoint::ResidPre(0),
            AddTensor(v.as_tensor().clone()),
        ));
        let out = run(&m, &ids, &hooks);
        let last = out.logits.i((0, ids.len() - 1)).unwrap();
        let loss = candle_nn::ops::log_softmax(&last, D::Minus1)
            .unwrap()
            .i(3)
            .unwrap();
        let g = loss.backward().unwrap();
        g.get(v.as_tensor())
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
    };
    let (g32, g64) = (grad(DType::F32), grad(DType::F64));
    let norm = g64.iter().map(|x| x * x).sum::<f64>().sqrt();
    let err = g32
        .iter()
        .zip(&g64)
        .map(|(a, b)| (a - b).powi(2))
        .sum::<f64>()
        .sqrt();
    assert!(
        norm > 1e-3 && err / norm < 1e-4,
        "f32 vs f64 gradient: relative error {}",
        err / norm
    );
}

#[test]
fn kv_cache_decoding_matches_full_forward() {
    let m = common::smollm2();
    let ids = m
        .encode("Water boils at one hundred degrees Celsius at sea level, and")
        .unwrap();
    let full = run(m.model.as_ref(), &ids, &Hooks::new()).logits;
    let mut kv = m.model.new_kv_cache();
    let k = 5;
    let mut chunks = vec![
        m.model
            .forward(&ids_tensor(&ids[..k]), Some(&mut kv), &Hooks::new())
            .unwrap()
            .logits,
    ];
    for t in k..ids.len() {
        chunks.push(
            m.model
                .forward(&ids_tensor(&ids[t..t + 1]), Some(&mut kv), &Hooks::new())
                .unwrap()
                .logits,
        );
    }
    let inc = Tensor::cat(&chunks, 1).unwrap();
    let d = common::max_abs_diff(&inc, &full);
    assert!(d < 1e-4, "incremental vs full: {d}");
}

#[test]
fn a_sequence_has_the_same_logits_alone_or_in_a_mixed_batch() {
    let m = common::smollm2();
    let texts = [
        "Hi",
        "The committee met on Tuesday to discuss the budget for next year",
        "Paris is the capital of",
    ];
    let seqs: Vec<Vec<u32>> = texts.iter().map(|t| m.encode(t).unwrap()).collect();
    let batch =
        scalpel::model::generate::forward_batch(m.model.as_ref(), &seqs, 2, &Hooks::new()).unwrap();
    for (i, s) in seqs.iter().enumerate() {
        let alone = run(m.model.as_ref(), s, &Hooks::new())
            .logits
            .squeeze(0)
            .unwrap();
        let in_batch = batch.logits.i(i).unwrap().narrow(0, 0, s.len()).unwrap();
        let d = common::max_abs_diff(&alone, &in_batch);
        assert!(d < 1e-4, "sequence {i}: {d}");
    }
}

/// Greedy decoding by full recomputation, the slow obvious way.
fn greedy_by_recompute(m: &dyn Transformer, prompt: &[u32], n: usize, hooks: &Hooks) -> Vec<u32> {
    let mut ids = prompt.to_vec();
    for _ in 0..n {
        let out = run(m, &ids, hooks);
        let last = out
            .logits
            .i((0, ids.len() - 1))
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        ids.push(argmax(&last));
    }
    ids[prompt.len()..].to_vec()
}

#[test]
fn writers_apply_at_every_new_position_during_kv_generation() {
    let m = common::smollm2();
    let prompt = m.encode("My favourite food is").unwrap();
    // Steer towards " Paris" with its own (scaled) embedding, at every position.
    let paris = m.tokenizer.encode(" Paris").unwrap()[0];
    let v = (m.model.token_embeddings().i(paris as usize).unwrap() * 8.0).unwrap();
    let hooks = Hooks::new().write(Writer::new(HookPoint::ResidPost(12), AddTensor(v)));
    let n = 8;
    let kv = generate(
        m.model.as_ref(),
        &prompt,
        &SamplingParams::greedy(n),
        1,
        &hooks,
        |_, _| {},
    )
    .unwrap();
    let slow = greedy_by_recompute(m.model.as_ref(), &prompt, n, &hooks);
    assert_eq!(
        kv[0].tokens, slow,
        "KV-cache generation must apply the writer like a full forward"
    );
    let plain = generate(
        m.model.as_ref(),
        &prompt,
        &SamplingParams::greedy(n),
        1,
        &Hooks::new(),
        |_, _| {},
    )
    .unwrap();
    assert_ne!(
        plain[0].tokens, kv[0].tokens,
        "the steering vector must change the text"
    );
    eprintln!(
        "plain: {:?}\nsteered: {:?}",
        m.tokenizer.decode(&plain[0].tokens).unwrap(),
        m.tokenizer.decode(&kv[0].tokens).unwrap()
    );
}

#[test]
fn sampling_is_seeded_and_independent_of_the_number_of_samples() {
    let m = common::tiny_gpt2();
    let prompt = m.encode("Hello world").unwrap();
    let p = SamplingParams {
        temperature: 1.0,
        top_k: None,
        top_p: Some(0.9),
        max_new_tokens: 12,
        seed: 42,
        stop_ids: vec![],
    };
    let a = generate(m.model.as_ref(), &prompt, &p, 4, &Hooks::new(), |_, _| {}).unwrap();
    let b = generate(m.model.as_ref(), &prompt, &p, 4, &Hooks::new(), |_, _| {}).unwrap();
    assert_eq!(a, b, "same seed, same samples");
    let one = generate(m.model.as_ref(), &prompt, &p, 1, &Hooks::new(), |_, _| {}).unwrap();
    assert_eq!(
        one[0], a[0],
        "sample 0 does not depend on how many samples run beside it"
    );
    assert!(
        a.iter().any(|g| g.tokens != a[0].tokens),
        "samples differ from each other"
    );
    let other = generate(
        m.model.as_ref(),
        &prompt,
        &SamplingParams { seed: 43, ..p },
        4,
        &Hooks::new(),
        |_, _| {},
    )
    .unwrap();
    assert_ne!(other, a, "another seed, other samples");
}

/// Prompts of different lengths decoded as one left-padded batch get, sample for
/// sample, the tokens each gets alone, plain and under a writer at every position; on
/// SmolLM2 (real weights, grouped queries, RoPE) and GPT-2 (learned positions, biases).
#[test]
fn batched_prompts_continue_as_each_does_alone() {
    use scalpel::model::generate::{generate_batch, prompts_per_batch};
    let gpt2 = common::tiny_gpt2();
    for m in [common::smollm2(), &gpt2] {
        let texts = [
            "The weather today",
            "Once upon a time, in a land far away, there lived",
            "I",
            "Nobody expected the committee to",
        ];
        let prompts: Vec<Vec<u32>> = texts.iter().map(|t| m.encode(t).unwrap()).collect();
        let p = SamplingParams {
            temperature: 1.0,
            top_k: None,
            top_p: Some(0.9),
            max_new_tokens: 10,
            seed: 0,
            stop_ids: m.tokenizer.stop_ids.clone(),
        };
        let d = m.model.info().d_model;
        let steer = Hooks::new().write(Writer::new(
            HookPoint::ResidPost(1),
            AddTensor(Tensor::randn(0f32, 2.0, d, &Device::Cpu).unwrap()),
        ));
        // Edits with products of their own: a LoReFT breaker and a direction ablation.
        let rand = |shape: &[usize]| Tensor::randn(0f32, 0.5, shape, &Device::Cpu).unwrap();
        let breaker = scalpel::intervene::Intervention::LowRank {
            sites: vec![(
                HookPoint::ResidPost(1),
                scalpel::intervene::LowRankEdit {
                    r: rand(&[4, d]),
                    w: rand(&[4, d]),
                    b: rand(&[4]),
                },
            )],
        }
        .hooks()
        .write(Writer::new(
            HookPoint::ResidPost(0),
            scalpel::model::hooks::ProjectOut(rand(&[d])),
        ));
        for hooks in [Hooks::new(), steer, breaker] {
            let n = 3;
            let group = prompts_per_batch(m.model.as_ref(), &hooks, n);
            if scalpel::model::blas::rows_independent() {
                let rows = scalpel::model::generate::batch_rows();
                assert!(rows >= 40, "{rows} rows");
                assert_eq!(group, rows / n, "{rows} rows of {n} samples");
            } else {
                eprintln!("prompts do not share a decoding batch on this machine");
            }
            let batch: Vec<(&[u32], u64)> = prompts
                .iter()
                .enumerate()
                .map(|(i, ids)| (ids.as_slice(), 100 + i as u64))
                .collect();
            let together = generate_batch(m.model.as_ref(), &batch, &p, n, &hooks).unwrap();
            assert_eq!(together.len(), prompts.len());
            for ((ids, seed), got) in batch.iter().zip(&together) {
                let alone = generate(
                    m.model.as_ref(),
                    ids,
                    &SamplingParams {
                        seed: *seed,
                        ..p.clone()
                    },
                    n,
                    &hooks,
                    |_, _| {},
                )
                .unwrap();
                assert_eq!(got, &alone, "group of {group}");
            }
        }
    }
}

/// Running only blocks `a..b` on the stream entering block `a` gives the full forward's
/// stream leaving block `b − 1`, writers inside the span included.
fn check_forward_blocks(m: &dyn Transformer, ids: &[u32], a: usize, b: usize) {
    let d = m.info().d_model;
    let push = Writer::new(
        HookPoint::ResidMid(a),
        AddTensor(Tensor::randn(0f32, 1.0, d, &Device::Cpu).unwrap()),
    );
    let (into, out) = (HookPoint::ResidPre(a), HookPoint::ResidPost(b - 1));
    let full = run(
        m,
        ids,
        &Hooks::new().write(push.clone()).read(into).read(out),
    );
    let (x, cache) = m
        .forward_blocks(
            full.cache.get(into).unwrap(),
            a..b,
            &Hooks::new().write(push).read(out),
        )
        .unwrap();
    let want = full.cache.get(out).unwrap();
    let diff = common::max_abs_diff(&x, want);
    assert!(diff < 1e-4, "blocks {a}..{b}: {diff}");
    assert_eq!(common::max_abs_diff(cache.get(out).unwrap(), &x), 0.0);
    // A wrong shape or an empty or out-of-range span is an error naming what is wrong.
    let bad = Tensor::zeros((1, 3, d + 1), DType::F32, &Device::Cpu).unwrap();
    let e = m.forward_blocks(&bad, a..b, &Hooks::new()).unwrap_err();
    assert!(e.to_string().contains(&format!("{}", d)), "{e}");
    let e = m
        .forward_blocks(want, b..b, &Hooks::new())
        .unwrap_err()
        .to_string();
    assert!(e.contains("non-empty range"), "{e}");
    let n = m.info().n_layers;
    assert!(m.forward_blocks(want, a..n + 1, &Hooks::new()).is_err());
}

#[test]
fn running_a_span_of_blocks_reproduces_the_full_forward_there() {
    let m = common::smollm2();
    let ids = m
        .encode("The quick brown fox jumps over the lazy dog")
        .unwrap();
    check_forward_blocks(m.model.as_ref(), &ids, 4, 11);
    check_forward_blocks(m.model.as_ref(), &ids, 0, 30);
    let g = common::tiny_gpt2();
    let ids = g.encode("The mill was built in 1887").unwrap();
    check_forward_blocks(g.model.as_ref(), &ids, 1, 2);
}

/// Edits with products of their own (a LoReFT breaker, a direction ablation) give each
/// row the same bits whatever rows run beside it (up to a decoding batch's rows), where
/// the packed or the few-row kernel runs: what decoding prompts together relies on.
#[test]
fn edits_give_each_row_the_same_bits_in_any_batch() {
    use scalpel::model::hooks::{Edit, EditCtx, ProjectOut};
    if !scalpel::model::blas::rows_independent() {
        eprintln!("no few-row kernel on this machine: rows may differ in the last bits");
        return;
    }
    let d = 576;
    let rand = |shape: &[usize]| Tensor::randn(0f32, 0.5, shape, &Device::Cpu).unwrap();
    let breaker = scalpel::intervene::LowRankEdit {
        r: rand(&[16, d]),
        w: rand(&[16, d]),
        b: rand(&[16]),
    };
    let ablate = ProjectOut(rand(&[d]));
    let x = rand(&[scalpel::model::generate::batch_rows(), 1, d]);
    let ctx = EditCtx {
        point: HookPoint::ResidPost(3),
        offset: 7,
    };
    let edits: [&dyn Edit; 2] = [&breaker, &ablate];
    for e in edits {
        let all = e.apply(&x, &ctx).unwrap();
        for m in [1, 2, 3, 10, 25, 40] {
            let some = e.apply(&x.narrow(0, 0, m).unwrap(), &ctx).unwrap();
            assert_eq!(
                common::max_abs_diff(&some, &all.narrow(0, 0, m).unwrap()),
                0.0,
                "{m} rows"
            );
        }
    }
}
