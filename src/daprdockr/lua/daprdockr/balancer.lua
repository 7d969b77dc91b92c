-- DaprDockr's routing inside nginx (lua-nginx-module): a table of host -> peers in a shared
-- dict, filled through a control endpoint, and a balancer that picks a peer per request.
--
-- Table: dd_routes[host] = "peer peer ..." ("ip:port" or "[v6]:port", interleaved across nodes
-- by the agent); "" = known host without a running instance (503); absent = unknown host (404).
-- dd_routes["\0ready"] = the generation of the last full load: until nginx got its table after a
-- (re)start, requests wait (up to 3 s) instead of being answered 404.
--
-- Control (POST /routes on the agent's private unix socket), one line each:
--   full <generation>            drop every route, then apply the lines below
--   set <host> <peer> <peer>...  route <host> to these peers (none: 503)
--   del <host>                   forget <host> (404)
-- GET /routes answers the table and the counters.
--
-- Balancer: round robin per worker over the peers, starting one further for each request;
-- a peer that refused or timed out is skipped by every worker for EJECT_SECONDS and the
-- request goes to the next peer (nginx's proxy_next_upstream decides whether a retry is
-- allowed: never for a non-idempotent request that reached a backend); at most MAX_TRIES.

local balancer = require "ngx.balancer"

local routes = ngx.shared.dd_routes
local ejected = ngx.shared.dd_eject
local stats = ngx.shared.dd_stats

local EJECT_SECONDS = 2
local MAX_TRIES = 3
local READY_KEY = "\0ready"

local _M = {}
local rr = {}        -- per worker: host -> round robin counter
local parsed = {}    -- per worker: raw peers string -> array of {host, port, name}
local parsed_n = 0

local function split_peers(raw)
    local cached = parsed[raw]
    if cached then return cached end
    if parsed_n >= 1000 then  -- bounded: the table changes, old strings are never asked again
        parsed, parsed_n = {}, 0
    end
    parsed_n = parsed_n + 1
    local list = {}
    for peer in raw:gmatch("%S+") do
        local host, port = peer:match("^%[(.+)%]:(%d+)$")
        if not host then host, port = peer:match("^(.+):(%d+)$") end
        if host then list[#list + 1] = {host = host, port = tonumber(port), name = peer} end
    end
    parsed[raw] = list
    return list
end

local function count(key, n)
    stats:incr(key, n or 1, 0)
end

function _M.route()
    local ready = routes:get(READY_KEY)
    local waited = 0
    while not ready and waited < 3 do
        ngx.sleep(0.05)
        waited = waited + 0.05
        ready = routes:get(READY_KEY)
    end
    local raw = routes:get(ngx.var.host)
    if raw == nil then
        return ngx.exit(ready and ngx.HTTP_NOT_FOUND or ngx.HTTP_SERVICE_UNAVAILABLE)
    end
    if raw == "" then
        return ngx.exit(ngx.HTTP_SERVICE_UNAVAILABLE)
    end
    ngx.ctx.host = ngx.var.host
    ngx.ctx.peers = split_peers(raw)
end

function _M.balance()
    local ctx = ngx.ctx
    local peers = ctx.peers
    local n = #peers
    if ctx.tries == nil then
        local host = ctx.host
        local next_start = (rr[host] or 0) + 1
        rr[host] = next_start
        ctx.start, ctx.tries, ctx.tried = next_start, 0, {}
    else
        local state = balancer.get_last_failure()
        if state == "failed" and ctx.last then
            ejected:set(ctx.last, true, EJECT_SECONDS)
            count("ejections")
        end
        count("retries")
    end
    local pick, fallback
    for i = 0, n - 1 do
        local p = peers[(ctx.start + i) % n + 1]
        if not ctx.tried[p.name] then
            if not ejected:get(p.name) then
                pick = p
                break
            end
            fallback = fallback or p
        end
    end
    pick = pick or fallback
    if not pick then
        return ngx.exit(ngx.HTTP_BAD_GATEWAY)
    end
    ctx.tried[pick.name] = true
    ctx.last = pick.name
    ctx.tries = ctx.tries + 1
    local ok, err = balancer.set_current_peer(pick.host, pick.port)
    if not ok then
        ngx.log(ngx.ERR, "daprdockr: cannot use peer ", pick.name, ": ", err)
        return ngx.exit(ngx.HTTP_BAD_GATEWAY)
    end
    if ctx.tries < MAX_TRIES and ctx.tries < n then
        balancer.set_more_tries(1)
    end
end

local function apply(body)
    local applied = 0
    for line in body:gmatch("[^\n]+") do
        local verb, rest = line:match("^(%S+)%s*(.*)$")
        if verb == "full" then
            for _, key in ipairs(routes:get_keys(0)) do
                if key ~= READY_KEY then routes:delete(key) end
            end
            parsed, parsed_n = {}, 0
            routes:set("\0pending", rest)
        elseif verb == "set" then
            local host, peers = rest:match("^(%S+)%s*(.*)$")
            if host then
                routes:set(host, peers)
                applied = applied + 1
            end
        elseif verb == "del" then
            routes:delete(rest)
            applied = applied + 1
        else
            return nil, "bad line: " .. line
        end
    end
    local pending = routes:get("\0pending")
    if pending then
        routes:delete("\0pending")
        routes:set(READY_KEY, pending)
    end
    count("updates")
    return applied
end

function _M.control()
    if ngx.req.get_method() == "POST" then
        ngx.req.read_body()
        local body = ngx.req.get_body_data() or ""
        local applied, err = apply(body)
        if not applied then
            ngx.status = ngx.HTTP_BAD_REQUEST
            ngx.say(err)
            return
        end
        ngx.say("ok ", applied)
        return
    end
    ngx.say("ready ", routes:get(READY_KEY) or "-")
    for _, key in ipairs({"updates", "retries", "ejections"}) do
        ngx.say(key, " ", stats:get(key) or 0)
    end
    for _, key in ipairs(routes:get_keys(0)) do
        if key:sub(1, 1) ~= "\0" then ngx.say("route ", key, " ", routes:get(key)) end
    end
end

return _M
