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
-- GET /routes?stats=1 answers the counters only (the agent polls them).  The syntax of a body is
-- checked whole before any of it is applied (a bad line changes nothing); a full load sets every
-- route before it drops the stale ones (a request never sees a host missing in between); a route
-- that does not fit the shared dict is refused (500, "no memory") and its host keeps its previous
-- route, instead of evicting other live routes (the lines before it stay applied; the agent
-- sends the same changes again).
--
-- Balancer: round robin per worker over the peers, starting one further for each request;
-- a peer that refused or timed out is skipped by every worker for EJECT_SECONDS and the
-- request goes to the next peer (nginx's proxy_next_upstream decides whether a retry is
-- allowed: never for a non-idempotent request that reached a backend); at most MAX_TRIES.  A
-- retry prefers a peer on a host (address) not tried yet, so a dead host never takes every try,
-- and picks from the host's route as it is at the retry, not as it was when the request came.
-- A refused connection on a request's last try (nothing left to retry, or a non-idempotent
-- request) ejects the peer too, from the log phase.

local balancer = require "ngx.balancer"

local routes = ngx.shared.dd_routes
local ejected = ngx.shared.dd_eject
local stats = ngx.shared.dd_stats

local EJECT_SECONDS = 2
local MAX_TRIES = 3
local READY_KEY = "\0ready"

local _M = {}
local rr = {}        -- per worker: host -> round robin counter
local rr_n = 0
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
    local peers = split_peers(raw)
    if #peers == 0 then
        return ngx.exit(ngx.HTTP_SERVICE_UNAVAILABLE)
    end
    ngx.ctx.host = ngx.var.host
    ngx.ctx.peers = peers
end

function _M.balance()
    local ctx = ngx.ctx
    local peers = ctx.peers
    local n = #peers
    if ctx.tries == nil then
        local host = ctx.host
        local last = rr[host]
        if last == nil then
            if rr_n >= 10000 then  -- bounded: hosts come and go
                rr, rr_n = {}, 0
            end
            rr_n = rr_n + 1
        end
        local next_start = (last or 0) + 1
        rr[host] = next_start
        ctx.start, ctx.tries, ctx.tried, ctx.tried_hosts = next_start, 0, {}, {}
    else
        local state = balancer.get_last_failure()
        if state == "failed" and ctx.last then
            ejected:set(ctx.last, true, EJECT_SECONDS)
            count("ejections")
        end
        count("retries")
        -- a retry goes by the table as it is now: a try can take seconds (a SYN retransmitted to
        -- a busy backend), and peers removed meanwhile are stopped, or soon will be
        local raw = routes:get(ctx.host)
        if raw and raw ~= "" then
            local fresh = split_peers(raw)
            if #fresh > 0 then
                peers, n = fresh, #fresh
                ctx.peers = fresh
            end
        end
    end
    -- untried, not ejected, on a host not tried yet; else untried and not ejected; else untried
    local pick, same_host, fallback
    for i = 0, n - 1 do
        local p = peers[(ctx.start + i) % n + 1]
        if not ctx.tried[p.name] then
            if ejected:get(p.name) then
                fallback = fallback or p
            elseif ctx.tried_hosts[p.host] then
                same_host = same_host or p
            else
                pick = p
                break
            end
        end
    end
    pick = pick or same_host or fallback
    if not pick then
        return ngx.exit(ngx.HTTP_BAD_GATEWAY)
    end
    ctx.tried[pick.name] = true
    ctx.tried_hosts[pick.host] = true
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

-- The lines of a control body, checked whole: a list of {verb, a, b}, or nil and the bad line.
local function parse(body)
    local ops = {}
    for line in body:gmatch("[^\n]+") do
        local verb, rest = line:match("^(%S+)%s*(.*)$")
        if verb == "full" and rest ~= "" then
            ops[#ops + 1] = {"full", rest}
        elseif verb == "set" then
            local host, peers = rest:match("^(%S+)%s*(.*)$")
            if not host then return nil, "bad line: " .. line end
            ops[#ops + 1] = {"set", host, peers}
        elseif verb == "del" and rest ~= "" then
            ops[#ops + 1] = {"del", rest}
        else
            return nil, "bad line: " .. line
        end
    end
    return ops
end

local function apply(body)
    local ops, err = parse(body)
    if not ops then return nil, err, ngx.HTTP_BAD_REQUEST end
    local generation, kept = nil, nil
    for _, op in ipairs(ops) do
        if op[1] == "full" then
            generation, kept = op[2], {}
            parsed, parsed_n = {}, 0
        end
    end
    local applied = 0
    for _, op in ipairs(ops) do
        if op[1] == "set" then
            local old = routes:get(op[2])
            local ok, set_err = routes:safe_set(op[2], op[3])
            if not ok then
                -- a longer value frees the old one before it allocates: give the host its route back
                if old ~= nil then routes:safe_set(op[2], old) end
                return nil, "cannot store the route of " .. op[2] .. ": " .. tostring(set_err),
                    ngx.HTTP_INTERNAL_SERVER_ERROR
            end
            if kept then kept[op[2]] = true end
            applied = applied + 1
        elseif op[1] == "del" then
            routes:delete(op[2])
            applied = applied + 1
        end
    end
    if kept then  -- a full load: every route is in place; now drop the ones it does not name
        for _, key in ipairs(routes:get_keys(0)) do
            if key:sub(1, 1) ~= "\0" and not kept[key] then routes:delete(key) end
        end
        routes:safe_set(READY_KEY, generation)
    end
    count("updates")
    return applied
end

local function say_counters()
    for _, key in ipairs({"updates", "retries", "ejections"}) do
        ngx.say(key, " ", stats:get(key) or 0)
    end
end

function _M.control()
    if ngx.req.get_method() == "POST" then
        ngx.req.read_body()
        local body = ngx.req.get_body_data() or ""
        local applied, err, status = apply(body)
        if not applied then
            ngx.status = status
            ngx.say(err)
            return
        end
        ngx.say("ok ", applied)
        return
    end
    ngx.say("ready ", routes:get(READY_KEY) or "-")
    say_counters()
    if ngx.var.arg_stats then return end
    for _, key in ipairs(routes:get_keys(0)) do
        if key:sub(1, 1) ~= "\0" then ngx.say("route ", key, " ", routes:get(key)) end
    end
end

-- Log phase: a connection refused on the request's last try ejects that peer as a retry would
-- have ($upstream_connect_time "-" with status 502: nginx never got a connection).
function _M.log()
    if ngx.status ~= 502 then return end  -- (the common case costs one comparison)
    local ctx = ngx.ctx
    if not ctx.last then return end
    local statuses = ngx.var.upstream_status or ""
    local connects = ngx.var.upstream_connect_time or ""
    local last_status = statuses:match("(%d+)%s*$")
    local last_connect = connects:match("([%d%.%-]+)%s*$")
    if last_status == "502" and last_connect == "-" and not ejected:get(ctx.last) then
        ejected:set(ctx.last, true, EJECT_SECONDS)
        count("ejections")
    end
end

return _M
