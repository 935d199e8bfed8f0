// Package catchup is the /mwpeer/catalog/1.0.0 protocol: it hands a newcomer
// the signed announcements its neighbour holds, so it sees the swarm at once
// instead of after a heartbeat, and fetches the announcements of peers a
// peer heard of only through beats. Service answers from a Source of signed
// envelopes; Fetch asks a peer and returns the envelopes as they came.
//
// One stream carries one request:
//
//	client -> server: request frame {"peers":[...]}, then it closes its write side
//	server -> client: envelope frame*, then it closes
//
// Every frame is a varint length prefix and a body. The request is JSON, at
// most MaxRequestSize bytes, naming up to MaxWanted peer IDs, or none for
// everything. The server answers with the envelopes its Source gives for
// the request (package experts gives the responder's own announcement, then
// the catalog's or just the peers asked for), each signed envelope as one raw
// frame of at most MaxFrameSize bytes. The client reads at most a full
// announcement and a beat per peer of its max, and the responder's own; the
// whole exchange has Deadline, and Fetch uses only an existing connection,
// never dialing.
//
// The package knows nothing of what an envelope says: package experts
// decides whom to ask and whom to answer (Admit, its rate limits), and
// verifies every envelope Fetch returns as if it had been gossiped before it
// applies it to the catalog. The server puts each stream in the ServiceName
// resource scope and reserves a frame's memory before it reads the request;
// the client reserves its read buffer, and each envelope it keeps, as well.
package catchup
