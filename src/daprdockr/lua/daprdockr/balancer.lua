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
-- A route may start with options (key=value tokens, never a peer): lb=round-robin (the plain
-- rotation), connect=<s> and read=<s> (this host's timeouts per try, else the config's 5 s / 60 s),
-- tls=on|redirect|only (the host over HTTPS too, HTTP redirected (308) to HTTPS, HTTPS only; without
-- it, HTTP only) and hsts=<max-age> (Strict-Transport-Security on HTTPS answers).  A request on the
-- wrong scheme for its host gets 421 (route_tls() is the HTTPS listener's access handler).
--
-- Balancer (lb=least-request, the default): each request goes to the peer with the fewest
-- requests in flight from this nginx (all workers: counters in the dd_peers shared dict), ties
-- broken in round-robin order per worker, so light traffic still rotates over every peer.  A peer
-- that is *stalled* -- requests in flight, but none answered for STALL_FACTOR x its usual latency
-- (an EWMA of its answers) and at least STALL_MIN seconds -- is passed over like an ejected one:
-- a frozen process (SIGSTOP, a deadlock, a long GC pause) accepts connections and never answers,
-- and round robin kept sending it a share of new requests until every client connection was stuck
-- there.  Now it keeps the one or two requests it got before it stalled.  A request that upgrades
-- (WebSocket) is not counted: it stays open by design.
-- A peer that refused or timed out is skipped by every worker for EJECT_SECONDS and the request
-- goes to the next peer (nginx's proxy_next_upstream decides whether a retry is allowed: never
-- for a non-idempotent request that reached a backend); at most MAX_TRIES.  A retry prefers a
-- peer on a host (address) not tried yet, so a dead host never takes every try, and picks from
-- the host's route as it is at the retry, not as it was when the request came.  A refused
-- connection on a request's last try (nothing left to retry, or a non-idempotent request) ejects
-- the peer too, from the log phase.  Ejected and stalled peers are still tried when nothing else
-- is left.

local balancer = require "ngx.balancer"

local routes = ngx.shared.dd_routes
local ejected = ngx.shared.dd_eject
local stats = ngx.shared.dd_stats
local load = ngx.shared.dd_peers  -- "n"..peer: requests in flight; "t"..peer: last progress; "l"..peer: EWMA

local EJECT_SECONDS = 2
local MAX_TRIES = 3
local STALL_MIN = 0.1
local STALL_FACTOR = 10
local EWMA_ALPHA = 0.3
local SCAN = 32  -- least-request looks at this many peers at most (from the rotation's start)
local READY_KEY = "\0ready"

local _M = {}
local https_suffix = ""  -- ":<port>" of the HTTPS listener in redirects (none for 443)
local rr = {}        -- per worker: host -> round robin counter
local rr_n = 0
local parsed = {}    -- per worker: raw route string -> array of {host, port, name}, with .opts
local parsed_n = 0

local function split_peers(raw)
    local cached = parsed[raw]
    if cached then return cached end
    if parsed_n >= 1000 then  -- bounded: the table changes, old strings are never asked again
        parsed, parsed_n = {}, 0
    end
    parsed_n = parsed_n + 1
    local list = {opts = {}}
    for token in raw:gmatch("%S+") do
        local key, value = token:match("^(%w+)=(%S+)$")
        if key then
            list.opts[key] = tonumber(value) or value
        else
            local host, port = token:match("^%[(.+)%]:(%d+)$")
            if not host then host, port = token:match("^(.+):(%d+)$") end
            if host then list[#list + 1] = {host = host, port = tonumber(port), name = token} end
        end
    end
    parsed[raw] = list
    return list
end

local function count(key, n)
    stats:incr(key, n or 1, 0)
end

-- The load of a peer: requests in flight, and whether it is stalled (see the header).
local function peer_load(name, now)
    local n = load:get("n" .. name) or 0
    if n <= 0 then return 0, false end
    local since = load:get("t" .. name) or now
    local usual = load:get("l" .. name) or 0
    local limit = usual * STALL_FACTOR
    if limit < STALL_MIN then limit = STALL_MIN end
    return n, now - since > limit
end

-- A try of a request starts on peer `name`.
local function try_started(ctx, name, now)
    ctx.sent_at = now
    if ctx.uncounted then return end
    local n = load:incr("n" .. name, 1, 0)
    if n == 1 then load:set("t" .. name, now) end  -- busy from now: progress is measured from here
end

-- The request's current try on ctx.last ended (answered or not).
local function try_ended(ctx)
    local name = ctx.last
    if not name or not ctx.sent_at then return end
    ctx.sent_at = nil
    if ctx.uncounted then return end
    local n = load:incr("n" .. name, -1, 0)
    if n and n < 0 then load:set("n" .. name, 0) end
end

-- Header filter: the peer of the current try answered (a response header from the upstream, not
-- one nginx made up after a failed try): progress, and a sample of its usual latency.
function _M.header()
    local ctx = ngx.ctx
    if ctx.hsts then ngx.header["Strict-Transport-Security"] = ctx.hsts end
    local name = ctx.last
    if not name or not ctx.sent_at or ctx.answered or ctx.uncounted then return end
    local took = tonumber((ngx.var.upstream_header_time or ""):match("([%d%.]+)%s*$") or "")
    if not took then return end
    ctx.answered = true
    load:set("t" .. name, ngx.now())
    local usual = load:get("l" .. name)
    load:set("l" .. name, usual and usual + EWMA_ALPHA * (took - usual) or took)
end

-- init_by_lua: the HTTPS listener's port, for redirects.
function _M.configure(opts)
    local port = opts.https_port
    https_suffix = (port and port ~= 443) and (":" .. port) or ""
end

-- The host's HTTPS policy for a request on this scheme: nil to go on, or the request is answered.
local function scheme_policy(opts, tls)
    local mode = opts.tls
    if tls then
        if not mode or mode == "off" then return ngx.exit(421) end
        if opts.hsts then ngx.ctx.hsts = "max-age=" .. opts.hsts end
    elseif mode == "redirect" then
        return ngx.redirect("https://" .. ngx.var.host .. https_suffix .. ngx.var.request_uri, 308)
    elseif mode == "only" then
        return ngx.exit(421)
    end
end

local function route(tls)
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
        if tls then return ngx.exit(421) end
        return ngx.exit(ngx.HTTP_SERVICE_UNAVAILABLE)
    end
    local peers = split_peers(raw)
    if tls or peers.opts.tls then scheme_policy(peers.opts, tls) end
    if #peers == 0 then
        return ngx.exit(ngx.HTTP_SERVICE_UNAVAILABLE)
    end
    local ctx = ngx.ctx
    ctx.host = ngx.var.host
    ctx.peers = peers
    ctx.uncounted = ngx.var.http_upgrade ~= nil
end

-- access phase of the HTTP listener
function _M.route()
    return route(false)
end

-- access phase of the HTTPS listener
function _M.route_tls()
    return route(true)
end

-- The peer for this try: the best by (rank, in flight), scanning from the rotation's start.
-- rank 1: untried, healthy, on a host not tried yet; 2: untried and healthy; 3: untried but
-- ejected or stalled.  Round robin ignores the load (rank and order only).
local function choose(ctx, peers, n, least, now)
    local best, best_rank, best_load
    local scanned = 0
    for i = 0, n - 1 do
        local p = peers[(ctx.start + i) % n + 1]
        if not ctx.tried[p.name] then
            local inflight, stalled = 0, false
            if least then inflight, stalled = peer_load(p.name, now) end
            local rank
            if stalled or ejected:get(p.name) then
                rank = 3
            elseif ctx.tried_hosts[p.host] then
                rank = 2
            else
                rank = 1
            end
            if not best or rank < best_rank or (rank == best_rank and inflight < best_load) then
                best, best_rank, best_load = p, rank, inflight
            end
            if best_rank == 1 and (best_load == 0 or not least) then break end
            scanned = scanned + 1
            if scanned >= SCAN and best_rank < 3 then break end
        end
    end
    return best
end

function _M.balance()
    local ctx = ngx.ctx
    local peers = ctx.peers
    local n = #peers
    local now = ngx.now()
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
        try_ended(ctx)
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
    local opts = peers.opts
    local pick = choose(ctx, peers, n, opts.lb ~= "round-robin", now)
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
    if opts.connect or opts.read then
        local read = opts.read or 60
        balancer.set_timeouts(opts.connect or 5, read, read)
    end
    if ctx.tries < MAX_TRIES and ctx.tries < n then
        balancer.set_more_tries(1)
    end
    try_started(ctx, pick.name, now)
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
    for _, key in ipairs({"updates", "retries", "ejections", "handshakes"}) do
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
    if ngx.var.arg_peers then  -- each peer's load: in flight, seconds since progress, usual latency
        local now = ngx.now()
        for _, key in ipairs(load:get_keys(0)) do
            if key:sub(1, 1) == "n" then
                local name = key:sub(2)
                local _, stalled = peer_load(name, now)
                ngx.say("peer ", name, " ", load:get(key), " ", now - (load:get("t" .. name) or now), " ",
                        load:get("l" .. name) or "-", stalled and " stalled" or "")
            end
        end
        return
    end
    for _, key in ipairs(routes:get_keys(0)) do
        if key:sub(1, 1) ~= "\0" then ngx.say("route ", key, " ", routes:get(key)) end
    end
end

-- Log phase: the last try ended; a connection refused on the request's last try ejects that peer as a retry would
-- have ($upstream_connect_time "-" with status 502: nginx never got a connection).
function _M.log()
    local ctx = ngx.ctx
    try_ended(ctx)
    if ngx.status ~= 502 then return end  -- (the common case costs one comparison)
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
