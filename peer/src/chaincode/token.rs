//! `TokenChaincode`: a fungible-token contract (mint, transfer, balance).
//!
//! Balances are decimal ASCII `u64` under key `balance/<account>`; an absent key is a zero
//! balance.
//!
//! | function | args | payload |
//! |---|---|---|
//! | `mint` | account, amount | the new balance |
//! | `transfer` | from, to, amount | empty |
//! | `balance` | account | the balance |
//!
//! Promises: a balance never goes negative ("insufficient funds", 400) and never overflows
//! (400); amounts are 1–20 ASCII digits and > 0; `from` ≠ `to`; every bad argument is a 400
//! error naming it. Anyone may mint (access control is left to the endorsement policy in this
//! iteration). A stored balance that is not a decimal `u64` is a 500 error.

use super::{arg_str, check_arity, Chaincode, ChaincodeError, Stub};

/// Longest account name, in bytes.
pub const MAX_ACCOUNT_BYTES: usize = 256;

/// The token contract (stateless; all state goes through the stub).
#[derive(Debug, Clone, Copy, Default)]
pub struct TokenChaincode;

/// The state key holding `account`'s balance.
pub fn balance_key(account: &str) -> String {
    format!("balance/{account}")
}

#[tonic::async_trait]
impl Chaincode for TokenChaincode {
    async fn invoke(
        &self,
        stub: &mut dyn Stub,
        function: &str,
        args: &[Vec<u8>],
    ) -> Result<Vec<u8>, ChaincodeError> {
        match function {
            "mint" => {
                check_arity(function, args, 2)?;
                let account = account_arg(args, 0, "account")?;
                let amount = amount_arg(args, 1, "amount")?;
                let balance = read_balance(stub, account).await?;
                let new = balance.checked_add(amount).ok_or_else(|| {
                    ChaincodeError::bad_request(format!(
                        "mint would overflow the balance of {account}"
                    ))
                })?;
                write_balance(stub, account, new).await?;
                Ok(new.to_string().into_bytes())
            }
            "transfer" => {
                check_arity(function, args, 3)?;
                let from = account_arg(args, 0, "from")?;
                let to = account_arg(args, 1, "to")?;
                let amount = amount_arg(args, 2, "amount")?;
                if from == to {
                    return Err(ChaincodeError::bad_request(
                        "argument to must differ from argument from",
                    ));
                }
                let from_balance = read_balance(stub, from).await?;
                let to_balance = read_balance(stub, to).await?;
                let from_new = from_balance.checked_sub(amount).ok_or_else(|| {
                    ChaincodeError::bad_request(format!(
                        "insufficient funds: {from} has {from_balance}, needs {amount}"
                    ))
                })?;
                let to_new = to_balance.checked_add(amount).ok_or_else(|| {
                    ChaincodeError::bad_request(format!(
                        "transfer would overflow the balance of {to}"
                    ))
                })?;
                write_balance(stub, from, from_new).await?;
                write_balance(stub, to, to_new).await?;
                Ok(Vec::new())
            }
            "balance" => {
                check_arity(function, args, 1)?;
                let account = account_arg(args, 0, "account")?;
                Ok(read_balance(stub, account).await?.to_string().into_bytes())
            }
            other => Err(ChaincodeError::UnknownFunction(other.to_owned())),
        }
    }
}

/// An account name: UTF-8, 1..=256 bytes, no NUL.
fn account_arg<'a>(
    args: &'a [Vec<u8>],
    index: usize,
    name: &str,
) -> Result<&'a str, ChaincodeError> {
    let account = arg_str(args, index, name)?;
    if account.is_empty() || account.len() > MAX_ACCOUNT_BYTES || account.contains('\0') {
        return Err(ChaincodeError::bad_request(format!(
            "argument {name} must be 1 to {MAX_ACCOUNT_BYTES} bytes without NUL"
        )));
    }
    Ok(account)
}

/// An amount: 1–20 ASCII digits, a `u64` greater than zero.
fn amount_arg(args: &[Vec<u8>], index: usize, name: &str) -> Result<u64, ChaincodeError> {
    let text = arg_str(args, index, name)?;
    let amount = parse_u64(text).ok_or_else(|| {
        ChaincodeError::bad_request(format!(
            "argument {name} must be a positive integer, got {:?}",
            text.chars().take(32).collect::<String>()
        ))
    })?;
    if amount == 0 {
        return Err(ChaincodeError::bad_request(format!(
            "argument {name} must be greater than zero"
        )));
    }
    Ok(amount)
}

/// Strict decimal: only ASCII digits (no sign, no spaces), at most 20 of them, fits in u64.
fn parse_u64(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

async fn read_balance(stub: &mut dyn Stub, account: &str) -> Result<u64, ChaincodeError> {
    match stub.get(&balance_key(account)).await? {
        None => Ok(0),
        Some(raw) => std::str::from_utf8(&raw)
            .ok()
            .and_then(parse_u64)
            .ok_or_else(|| {
                ChaincodeError::failed(format!("stored balance of {account} is corrupt"))
            }),
    }
}

async fn write_balance(
    stub: &mut dyn Stub,
    account: &str,
    balance: u64,
) -> Result<(), ChaincodeError> {
    stub.put(&balance_key(account), balance.to_string().into_bytes())
        .await
}
