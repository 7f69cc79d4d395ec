#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| caravan::fuzz_targets::template(caravan_fuzz::model(), data));
