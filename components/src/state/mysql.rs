//! Placeholder: being implemented.

use async_trait::async_trait;

use super::{
    DeleteRequest, Features, GetRequest, InitError, SetRequest, StateError, StateItem, StateStore,
};
use crate::ComponentMetadata;

pub struct MySqlStore;

impl MySqlStore {
    pub async fn connect(_metadata: &ComponentMetadata) -> Result<Self, InitError> {
        Err(InitError::Connect("not implemented".into()))
    }
}

#[async_trait]
impl StateStore for MySqlStore {
    fn features(&self) -> Features {
        Features::default()
    }

    async fn get(&self, _req: &GetRequest) -> Result<Option<StateItem>, StateError> {
        Err(StateError::NotSupported("get"))
    }

    async fn set(&self, _req: &SetRequest) -> Result<(), StateError> {
        Err(StateError::NotSupported("set"))
    }

    async fn delete(&self, _req: &DeleteRequest) -> Result<(), StateError> {
        Err(StateError::NotSupported("delete"))
    }
}
