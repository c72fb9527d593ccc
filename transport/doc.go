// Package transport carries multiraft's messages between nodes over
// stream connections. A *Transport implements multiraft.Transport; its
// ServeRaft and ServeSnapshot take the inbound connections a node's
// connection mux routes to it, and hand what arrives to a Handler (a
// *multiraft.Engine).
//
// # Outbound raft messages
//
// Each peer has one outbound raft connection (StreamKind KindRaft) and one
// writer goroutine. Send encodes the messages on the caller's goroutine,
// appends them to the peer's queue and wakes the writer; it never waits on
// the network. Each pass of the writer takes everything queued — many
// groups' messages — and writes it as one frame in one Write, at once: no
// timer, so while one write is in flight the queue refills and the next
// frame batches it (as one log sync does for the log writer).
//
// A queue holds at most Config.MaxQueueBytes of encoded messages; Send
// drops what does not fit. Connections are dialled lazily, when there is
// something to send. A failed dial drops what was queued; a failed write
// drops the frame being written; either way the next attempt waits a
// backoff of 50ms doubling to 1s (a connection that had lived longer is
// redialled at once). In each pass where messages were dropped or the
// attempt failed, the writer calls Handler.ReportUnreachable once, so raft
// probes the follower instead of streaming appends into the void. raft
// retransmits what is lost; what is delivered is delivered in the order it
// was sent.
//
// # Raft frames
//
// A raft connection carries frames, after the mux preamble written by
// Config.Dial:
//
//	frame   = uvarint(len(body)) body
//	body    = uvarint(count) record*count
//	record  = uvarint(group) uvarint(len(msg)) msg
//
// where msg is a proto-marshalled raftpb.Message. A body is at most
// MaxFrameSize bytes. The decoder checks every length against its bound
// or against the bytes that remain before allocating, and rejects
// trailing bytes; an error closes the connection. Inbound frames go to
// Handler.Receive, one call per frame, in order. A node keeps one inbound
// raft stream per peer: a new connection from the same peer closes the
// previous one and waits for it to stop delivering before it reads.
//
// # Snapshots
//
// Every snapshot has a connection of its own (KindSnapshot), so a big one
// never delays heartbeats. The sender writes
//
//	header  = uvarint(group) uvarint(len(msg)) msg     (the MsgSnap)
//	chunk   = uvarint(n) n bytes                       (n ≤ MaxChunkSize)
//	end     = uvarint(0)
//
// and the receiver answers with one ack:
//
//	ack     = 0x00                                     (accepted)
//	        | 0x01 uvarint(len(text)) text             (refused, ≤ 4 KiB)
//
// The receiver hands Handler.ReceiveSnapshot a reader over the chunk
// payloads (io.EOF at the terminator, an error if the stream breaks
// first), then writes the ack with the handler's outcome. The sender reads
// the ack while it writes, so a refusal stops the transfer early; done
// gets nil, an error wrapping ErrSnapshotRejected with the receiver's
// text, or the transfer's error. Every chunk write and read has its own
// deadline (Config.SnapshotChunkTimeout); there is none on the whole
// transfer.
//
// # Concurrency
//
// Every method of Transport is safe for concurrent use. Send and
// SendSnapshot never block on the network. They encode the messages they
// are given before returning, so those must not be modified while they
// run, and may be afterwards. Handler
// methods are called from the transport's goroutines: Receive from each
// peer's ServeRaft (one at a time per peer), ReceiveSnapshot from
// ServeSnapshot, ReportUnreachable from each peer's writer — never from
// inside Send, so a caller may hold its own locks while sending. A
// SendSnapshot's done is called from a transport goroutine too.
//
// The handler may be given in Config or set later with SetHandler, before
// traffic flows; until then inbound messages are dropped and inbound
// snapshots refused. Close closes every connection and waits for every
// goroutine of the transport, ServeRaft and ServeSnapshot calls included;
// afterwards Sends are dropped and SendSnapshots fail with ErrClosed.
//
// Message payloads are never logged.
package transport
