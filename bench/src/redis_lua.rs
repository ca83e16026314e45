//! The Lua scripts of daprd's `state.redis` store
//! (`components/src/state/redis.rs`), copied verbatim so the direct target
//! sends Redis exactly what daprd sends. A test fails when they drift.

/// The store's `GET_SCRIPT`.
pub const GET_SCRIPT: &str = r#"
local t = redis.call("TYPE", KEYS[1])["ok"]
if t == "hash" then
  local v = redis.call("HMGET", KEYS[1], "data", "version")
  return {v[1], v[2], redis.call("PTTL", KEYS[1])}
elseif t == "string" then
  return {redis.call("GET", KEYS[1]), false, redis.call("PTTL", KEYS[1])}
end
return false
"#;

/// The store's `LUA_HELPERS`.
pub const LUA_HELPERS: &str = r#"
local function version_of(key)
  if redis.call("TYPE", key)["ok"] == "hash" then
    return redis.call("HGET", key, "version")
  end
  return false
end

-- Returns true when the op may run against a key currently at `ver`.
local function allowed(ver, kind, etag, fw)
  if etag ~= "" then
    return ver == etag
  end
  if kind == "s" and fw == "1" then
    return not ver
  end
  return true
end

local function apply(key, kind, fw, data, ttl)
  if kind == "d" then
    redis.call("DEL", key)
    return 0
  end
  if redis.call("TYPE", key)["ok"] ~= "hash" then
    redis.call("DEL", key)
  end
  redis.call("HSET", key, "data", data)
  if fw == "1" then
    redis.call("HSET", key, "first-write", 0)
  end
  local v = redis.call("HINCRBY", key, "version", 1)
  if tonumber(ttl) > 0 then
    redis.call("PEXPIRE", key, ttl)
  else
    redis.call("PERSIST", key)
  end
  return v
end
"#;

/// The store's `OP_SCRIPT_BODY` (a single set or delete runs
/// `LUA_HELPERS` + this).
pub const OP_SCRIPT_BODY: &str = r#"
local kind, etag, fw, data, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local ver = version_of(KEYS[1])
if not allowed(ver, kind, etag, fw) then
  return -1
end
if kind == "s" and ver and not tonumber(ver) then
  return redis.error_reply("hash field 'version' is not an integer")
end
return apply(KEYS[1], kind, fw, data, ttl)
"#;

#[cfg(test)]
mod tests {
    use super::*;

    /// The store's source, to check the copies against.
    const STORE_SOURCE: &str = include_str!("../../components/src/state/redis.rs");

    #[test]
    fn scripts_match_the_store() {
        for (name, body) in [
            ("GET_SCRIPT", GET_SCRIPT),
            ("LUA_HELPERS", LUA_HELPERS),
            ("OP_SCRIPT_BODY", OP_SCRIPT_BODY),
        ] {
            let decl = format!("const {name}: &str = r#\"{body}\"#;");
            assert!(
                STORE_SOURCE.contains(&decl),
                "{name} differs from components/src/state/redis.rs; copy it again"
            );
        }
        assert!(
            STORE_SOURCE.contains("op: Script::new(&format!(\"{LUA_HELPERS}{OP_SCRIPT_BODY}\"))"),
            "the store no longer builds its op script as LUA_HELPERS + OP_SCRIPT_BODY"
        );
    }
}
