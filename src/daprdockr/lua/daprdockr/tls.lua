-- DaprDockr's HTTPS inside nginx (lua-nginx-module): certificates chosen by SNI from a shared
-- dict, and the ACME HTTP-01 answers from another; both filled by the agent through its control
-- socket, so adding, rotating or deleting a certificate never reloads nginx.
--
-- dd_certs[host] = PEM: the certificate chain, then its private key ("*.example.com" for a
-- wildcard).  A handshake's SNI (lower-cased, without a trailing dot) is looked up exactly, then
-- as the wildcard one label up; no SNI or no match keeps the server's static ssl_certificate (the
-- node's default self-signed one).  Parsed certificates and keys are cdata, which cannot go in a
-- shared dict: each worker keeps them in an LRU cache keyed by host and checked against the PEM
-- it was parsed from.  dd_certs["\0version"] counts the changes: a worker also remembers, per
-- SNI name, what it chose at which version, so a handshake costs one number read from the dict
-- until the certificates change (and a rotation is seen at the next handshake).
--
-- dd_ocsp[host] = the DER OCSP response the agent fetched for host's certificate (best effort):
-- stapled when the client asks for the status; dropped here as soon as host's PEM changes, and
-- taken only if it was fetched for the PEM held now (the sha1 sent with it).
--
-- dd_acme[token] = key authorization: GET /.well-known/acme-challenge/<token> on the HTTP
-- listener answers it (before any redirect); an unknown token goes on to the service's routing.
--
-- Control (the agent's private unix socket):
--   POST /certs  a body of records, checked whole (a syntax error: 400, nothing applied):
--     full <generation>\n          (first) after this body, drop every host it does not name
--     set <host> <bytes>\n<PEM>\n  store <host>'s PEM (parsed first: a PEM nginx cannot read is
--                                  skipped and named in the answer, "bad <host> <reason>")
--     del <host>\n                 forget <host>
--   POST /ocsp   as /certs, with "set <host> <sha1 of host's PEM> <bytes>\n<DER>\n" (a staple for
--                a PEM no longer held is skipped and named in the answer, "stale <host>")
--   POST /acme   lines: "full <generation>", "set <token> <authorization>", "del <token>"
--   GET /certs   the hosts held and their PEM's size; GET /ocsp the staples; GET /acme the tokens held

local ssl = require "ngx.ssl"
local ocsp = require "ngx.ocsp"
local lrucache = require "resty.lrucache"

local certs = ngx.shared.dd_certs
local acme = ngx.shared.dd_acme
local staples = ngx.shared.dd_ocsp
local stats = ngx.shared.dd_stats

local CHALLENGE_PREFIX = #"/.well-known/acme-challenge/"
local VERSION = "\0version"
local cache = assert(lrucache.new(2000))   -- per worker: host -> {raw, cert, key}
local chosen = assert(lrucache.new(4000))  -- per worker: SNI name -> {version, parsed or false}

local _M = {}

local function drop_staple(host)
    if staples then staples:delete(host) end  -- (an nginx.conf of before OCSP has no dd_ocsp)
end

local function parse_pem(raw)
    local cert, err = ssl.parse_pem_cert(raw)
    if not cert then return nil, nil, "certificate: " .. tostring(err) end
    local key, kerr = ssl.parse_pem_priv_key(raw)
    if not key then return nil, nil, "key: " .. tostring(kerr) end
    return cert, key
end

local function parsed(host, raw)
    local hit = cache:get(host)
    if hit and hit.raw == raw then return hit end
    local cert, key, err = parse_pem(raw)
    if not cert then
        ngx.log(ngx.WARN, "daprdockr: bad certificate for ", host, ": ", err)
        return nil
    end
    hit = {host = host, raw = raw, cert = cert, key = key}
    cache:set(host, hit)
    return hit
end

local function lookup(name)
    if not name then return nil end
    name = name:lower()
    if name:sub(-1) == "." then name = name:sub(1, -2) end
    local raw = certs:get(name)
    if raw then return name, raw end
    local rest = name:match("^[^.]+(%..+%..+)$")  -- a wildcard covers one label, never a TLD
    if rest then
        local wild = "*" .. rest
        raw = certs:get(wild)
        if raw then return wild, raw end
    end
    return nil
end

-- ssl_certificate_by_lua: the certificate for this handshake's SNI.
function _M.cert()
    stats:incr("handshakes", 1, 0)
    local name = ssl.server_name()
    if not name then return end  -- the node's default certificate
    local version = certs:get(VERSION) or 0
    local hit = chosen:get(name)
    local c
    if hit and hit.version == version then
        c = hit.c
    else
        local host, raw = lookup(name)
        c = host and parsed(host, raw) or false
        chosen:set(name, {version = version, c = c})
    end
    if not c then return end  -- no certificate for this name: the default one
    local ok, err = ssl.clear_certs()
    if ok then ok, err = ssl.set_cert(c.cert) end
    if ok then ok, err = ssl.set_priv_key(c.key) end
    if not ok then
        ngx.log(ngx.ERR, "daprdockr: cannot use the certificate of ", c.host, ": ", err)
        return ngx.exit(ngx.ERROR)
    end
    local der = staples and staples:get(c.host)
    if der then  -- best effort: a staple that cannot be set never fails the handshake
        ok, err = ocsp.set_ocsp_status_resp(der)
        if not ok then ngx.log(ngx.WARN, "daprdockr: cannot staple the OCSP response of ", c.host, ": ", err) end
    end
end

-- access phase of /.well-known/acme-challenge/ on the HTTP listener.
function _M.challenge()
    local answer = acme:get(ngx.var.uri:sub(CHALLENGE_PREFIX + 1))
    if not answer then
        return require("daprdockr.balancer").route()
    end
    ngx.header.content_type = "application/octet-stream"
    ngx.print(answer)
    return ngx.exit(ngx.HTTP_OK)
end

-- The records of a /certs body: a list of {verb, host, pem}, the full generation, or nil and why.
local function parse_certs(body)
    local ops, pos, full = {}, 1, nil
    local size = #body
    while pos <= size do
        local eol = body:find("\n", pos, true)
        if not eol then return nil, nil, "unterminated line at byte " .. pos end
        local line = body:sub(pos, eol - 1)
        pos = eol + 1
        local verb, host, rest = line:match("^(%S+) (%S+)%s*(.*)$")
        if verb == "full" and #ops == 0 and not full then
            full = host
        elseif verb == "set" and (rest:match("^%d+$") or rest:match("^%x+ %d+$")) then
            local digest, len = rest:match("^(%x+) (%d+)$")
            local n = tonumber(len or rest)
            if pos + n > size + 1 or body:sub(pos + n, pos + n) ~= "\n" then
                return nil, nil, "bad length for " .. host
            end
            ops[#ops + 1] = {"set", host, body:sub(pos, pos + n - 1), digest}
            pos = pos + n + 1
        elseif verb == "del" and rest == "" then
            ops[#ops + 1] = {"del", host}
        else
            return nil, nil, "bad line: " .. line:sub(1, 200)
        end
    end
    return ops, full
end

-- Apply a control body's ops to ``dict``: a ``set`` through ``put(host, op)`` (nil once stored, else
-- the line to answer), a ``del`` through ``drop(host)``; after a ``full`` body every key it did not
-- name is dropped too (``keep`` excepted).  Returns the count applied and the answer lines, or nil
-- and the parse error.
local function apply_ops(body, dict, put, drop, keep)
    local ops, full, err = parse_certs(body)
    if not ops then return nil, err end
    local out, named, applied = {}, {}, 0
    for _, op in ipairs(ops) do
        local host = op[2]
        named[host] = true
        local problem
        if op[1] == "del" then drop(host) else problem = put(host, op) end
        if problem then out[#out + 1] = problem else applied = applied + 1 end
    end
    if full then  -- every named host is in place; now drop the others
        for _, key in ipairs(dict:get_keys(0)) do
            if not named[key] and key ~= keep then drop(key) end
        end
    end
    return applied, out
end

local function drop_cert(host)
    certs:delete(host)
    drop_staple(host)
end

local function put_cert(host, op)
    local cert, _, perr = parse_pem(op[3])
    if not cert then return "bad " .. host .. " " .. perr:gsub("\n", " ") end
    local changed = certs:get(host) ~= op[3]
    local ok, serr = certs:safe_set(host, op[3])
    if not ok then return "bad " .. host .. " cannot store: " .. tostring(serr) end
    if changed then drop_staple(host) end
end

local function certs_post(body)
    local applied, out = apply_ops(body, certs, put_cert, drop_cert, VERSION)
    if not applied then return ngx.HTTP_BAD_REQUEST, out end
    certs:incr(VERSION, 1, 0)
    stats:incr("cert_updates", 1, 0)
    return ngx.HTTP_OK, "ok " .. applied .. "\n" .. table.concat(out, "\n")
end

local function hex(bin)
    return (bin:gsub(".", function(ch) return string.format("%02x", ch:byte()) end))
end

local function drop_ocsp(host)
    staples:delete(host)
end

-- A staple is kept only for the exact certificate it was fetched for (the SHA-1 of its PEM).
local function put_staple(host, op)
    local pem = certs:get(host)
    if not op[4] or not pem or hex(ngx.sha1_bin(pem)) ~= op[4]:lower() then
        staples:delete(host)
        return "stale " .. host
    end
    local ok, serr = staples:safe_set(host, op[3])
    if not ok then return "bad " .. host .. " cannot store: " .. tostring(serr) end
end

local function ocsp_post(body)
    local applied, out = apply_ops(body, staples, put_staple, drop_ocsp)
    if not applied then return ngx.HTTP_BAD_REQUEST, out end
    return ngx.HTTP_OK, "ok " .. applied .. "\n" .. table.concat(out, "\n")
end

local function acme_post(body)
    local ops, full = {}, false
    for line in body:gmatch("[^\n]+") do
        local verb, token, value = line:match("^(%S+) ([%w_%-]+)%s*([%w_%.%-]*)$")
        if verb == "full" and #ops == 0 and value == "" then
            full = true
        elseif verb == "set" and value ~= "" then
            ops[#ops + 1] = {token, value}
        elseif verb == "del" and value == "" then
            ops[#ops + 1] = {token}
        else
            return ngx.HTTP_BAD_REQUEST, "bad line: " .. line:sub(1, 200)
        end
    end
    local named = {}
    for _, op in ipairs(ops) do
        named[op[1]] = true
        if op[2] then
            local ok, err = acme:safe_set(op[1], op[2])
            if not ok then return ngx.HTTP_INTERNAL_SERVER_ERROR, "cannot store " .. op[1] .. ": " .. err end
        else
            acme:delete(op[1])
        end
    end
    if full then
        for _, key in ipairs(acme:get_keys(0)) do
            if not named[key] then acme:delete(key) end
        end
    end
    return ngx.HTTP_OK, "ok " .. #ops
end

local function control(dict, post)
    if ngx.req.get_method() == "POST" then
        ngx.req.read_body()
        local status, text = post(ngx.req.get_body_data() or "")
        ngx.status = status
        ngx.say(text)
        return
    end
    for _, key in ipairs(dict:get_keys(0)) do
        if key:sub(1, 1) ~= "\0" then
            local value = dict:get(key)
            ngx.say(key, " ", value and #value or 0)
        end
    end
end

function _M.certs_control()
    return control(certs, certs_post)
end

function _M.ocsp_control()
    return control(staples, ocsp_post)
end

function _M.acme_control()
    return control(acme, acme_post)
end

return _M
