//! `KvChaincode`: a plain key/value contract, for tests and demos.
//!
//! | function | args | payload |
//! |---|---|---|
//! | `put` | key, value | empty |
//! | `get` | key | the value; 400 "not found: KEY" when absent |
//! | `delete` | key | empty |
//! | `range` | start, end (empty: unbounded) | JSON array of `[key, value]` pairs, values decoded as UTF-8 lossily |
//!
//! Keys must be UTF-8; values are raw bytes. Like every contract it does not see its own
//! writes within a transaction. Promises: wrong arity or non-UTF-8 keys are 400 errors naming
//! the argument; nothing panics.

use super::{arg_str, check_arity, Chaincode, ChaincodeError, Stub};

/// The key/value contract (stateless; all state goes through the stub).
#[derive(Debug, Clone, Copy, Default)]
pub struct KvChaincode;

#[tonic::async_trait]
impl Chaincode for KvChaincode {
    async fn invoke(
        &self,
        stub: &mut dyn Stub,
        function: &str,
        args: &[Vec<u8>],
    ) -> Result<Vec<u8>, ChaincodeError> {
        match function {
            "put" => {
                check_arity(function, args, 2)?;
                let key = arg_str(args, 0, "key")?;
                let value = args.get(1).cloned().unwrap_or_default();
                stub.put(key, value).await?;
                Ok(Vec::new())
            }
            "get" => {
                check_arity(function, args, 1)?;
                let key = arg_str(args, 0, "key")?;
                stub.get(key)
                    .await?
                    .ok_or_else(|| ChaincodeError::bad_request(format!("not found: {key}")))
            }
            "delete" => {
                check_arity(function, args, 1)?;
                let key = arg_str(args, 0, "key")?;
                stub.delete(key).await?;
                Ok(Vec::new())
            }
            "range" => {
                check_arity(function, args, 2)?;
                let start = arg_str(args, 0, "start")?;
                let end = arg_str(args, 1, "end")?;
                let pairs: Vec<(String, String)> = stub
                    .range(start, end)
                    .await?
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                    .collect();
                serde_json::to_vec(&pairs)
                    .map_err(|e| ChaincodeError::failed(format!("encoding range result: {e}")))
            }
            other => Err(ChaincodeError::UnknownFunction(other.to_owned())),
        }
    }
}
