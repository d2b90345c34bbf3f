// Package hypothesis is the Hypothesis Real Time API (h's streamer,
// wss://hypothes.is/ws) as a protocol of the gateway, normative reference
// REFERENCE.md in this directory (cited by section, "§5.2").
//
// # Endpoints
//
//   - GET /ws on the main listener: the WebSocket (Route). A plain request
//     without a valid upgrade gets h's 400 bad_handshake JSON (RegisterHTTP).
//     With --allowed-origins (the node marks the route Browser), an upgrade
//     whose Origin header is not listed gets h's 403 forbidden JSON
//     (Route.Forbidden) before Accept; one without Origin is not a browser
//     and passes.
//   - POST /api/hypothesis/events on the admin listener (EventHandler): the
//     annotation events, since the gateway has no database.
//
// # Loop boundary
//
// Accept, every Handler method and the session.Sink methods run on the
// connection's event loop and never block: authentication is an in-memory
// key check (token.Secrets.Verify, token.Revoked.Check) or the configured
// JWT verifier, which must not do I/O either. EventHandler runs on
// net/http's goroutines: it validates the event, computes everything the
// loops need (normalised, versioned URI scope keys, visibility data, the
// notification text) and publishes ONE message on the hub channel
// "#hypothesis" (Channel); with Redis the broker carries it to every node.
// Each loop has one dispatcher, a pseudo-session with zero claims that is
// subscribed to the channel but never added to the shard (revocation sweeps
// never see it), created with the loop's first socket and kept. It decodes
// the event once per loop, finds candidate sockets in the loop's index
// (filter row -> sockets, kept in Loop.Local and updated when a filter
// changes or a socket closes), dedupes them with a per-socket event stamp,
// applies §8 and writes the notification, framed once per loop, to each
// recipient. An event costs what it matches, not what the loop holds.
//
// Authenticated sockets register a session (session.New with their
// claims) so the node's revocation sweep closes them with 3004, and an
// operator's disconnect by subject (POST /api/disconnect) with 3006 "closed
// by the operator; you may reconnect" (nothing revoked); anonymous sockets
// have no session but are indexed all the same (a disconnect by connection
// id reaches them).
//
// # Decisions where the reference leaves a choice
//
//   - Authority: Options.Authority, default "localhost"; the userid is
//     "acct:<subject>@<authority>", the subject being the access key's, or
//     the user name the JWT verifier returns.
//   - Tokens: access_token (its last occurrence, decoded like WebOb) wins
//     when present, even empty; otherwise "Authorization: Bearer ". A gateway
//     access key is tried first, then a gateway JWT when VerifyJWT is set.
//     Every failure, and every revoked credential, is an anonymous socket.
//   - Event input: the JSON body described by EventInput. Unknown keys are
//     refused (400) to catch typos; src_client_id may be null or absent.
//   - Group membership: only what the event supplies (group_members for
//     group-readable annotations, moderators for hidden ones). There is no
//     other membership source; a group-readable annotation without members
//     reaches nobody but readers named in permissions.read.
//   - NIPSA: as in h, an authenticated socket other than the author's is
//     skipped; an anonymous socket passes this step and is judged by
//     visibility. Checkpoints (h's Hide & Reveal) are not supported.
//   - Filters: every clause must be an object with "field" (not a list or
//     object) and "value" (a scalar or a list of scalars), whatever its
//     field; clauses on other fields are then dropped. A bad clause keeps the
//     old filter and answers "failed to parse filter" (§10.3). A filter of
//     more than Options.MaxFilterRows rows (default 1000; rows are the
//     distinct values of all clauses after /uri version expansion: a
//     socket's subscriptions) keeps the old filter too and answers
//     invalid_data "filter too large: more than N values" (h has no cap).
//     Like every reply, the error goes only to a message with a numeric
//     "id". Setting or dropping a filter costs O(rows).
//   - Versions (§6.3) are supported: a filter value's ":vN"/":all" suffixes,
//     and the annotation's "version" field (null or 0: unversioned).
//   - URI normalisation follows h under Python 3.11.11, h's runtime
//     (bracketed hosts checked as 3.11.11 does; query items decoded twice
//     as h does). Not reproduced: urllib's NFKC check of non-ASCII netlocs,
//     Unicode digits in ports and version suffixes, and Python's
//     special-cased lower-casing of a few characters. Where h raises the
//     URI is compared verbatim.
//   - Message parsing: a leading UTF-8 BOM is skipped as Python's
//     json.loads(bytes) does; NaN and Infinity literals, which Python
//     accepts, are invalid JSON here (close 1000). A binary frame that is not
//     UTF-8 is invalid JSON.
//   - Keepalive: a Ping every 30 s; 60 s without any frame closes with 1001.
//   - debug=1 is accepted and ignored (it only turns on logging in h).
//     access_token is never logged.
//   - Origin: h checks none, despite its 403 text; here --allowed-origins
//     applies (off by default: every origin is accepted).
//   - session-change events are not implemented.
package hypothesis
