//! The default model, loaded once per fuzzing process from the store
//! (`$CARAVAN_MODELS`; `caravan pull` installs it).

use std::sync::OnceLock;

use caravan::kernels::Arithmetic;
use caravan::loaded::LoadedModel;
use caravan::store::{Store, DEFAULT_MODEL};

pub fn model() -> &'static LoadedModel {
    static MODEL: OnceLock<LoadedModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        let path = Store::from_env().resolve(DEFAULT_MODEL).expect("the default model is installed");
        LoadedModel::open(&path, 1, Arithmetic::default()).expect("the default model loads")
    })
}
