package transport

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"lambdadb/multiraft"
)

const (
	// MaxFrameSize bounds a raft frame's body, and the encoded header
	// message of a snapshot stream. A decoder rejects anything larger
	// before allocating; a sender drops a message that cannot fit.
	MaxFrameSize = 64 << 20
	// MaxChunkSize bounds one chunk of a snapshot stream as a receiver
	// accepts it (Config.SnapshotChunk is capped to it).
	MaxChunkSize = 16 << 20

	// frameHeadroom is the space reserved in front of each frame in a
	// peer's queue for the frame header: uvarint(body length) +
	// uvarint(count), at most 10 bytes each.
	frameHeadroom = 2 * binary.MaxVarintLen64
	// maxRecordSize bounds one encoded record so a frame holding only it
	// (count prefix included) fits in MaxFrameSize.
	maxRecordSize = MaxFrameSize - binary.MaxVarintLen64
	// readStep is how much of a frame body is allocated ahead of the
	// bytes actually received, so a lying length costs no more memory
	// than the peer sends.
	readStep = 1 << 20
)

// Decoding errors. A connection whose stream yields one is closed.
var (
	// ErrFrameTooLarge: a length prefix exceeds its bound.
	ErrFrameTooLarge = errors.New("transport: frame too large")
	// ErrCorruptFrame: a frame's body does not parse.
	ErrCorruptFrame = errors.New("transport: corrupt frame")
)

// appendRecord appends one message record — uvarint(group),
// uvarint(len), proto bytes — to b.
func appendRecord(b []byte, group uint64, m *pb.Message) ([]byte, error) {
	size := proto.Size(m)
	b = binary.AppendUvarint(b, group)
	b = binary.AppendUvarint(b, uint64(size))
	start := len(b)
	b, err := proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(b, m)
	if err != nil {
		return b, err
	}
	if len(b)-start != size {
		// The message changed between Size and Marshal: the caller broke
		// the contract that sent messages are not mutated.
		return b, fmt.Errorf("transport: message size changed while marshalling (%d != %d)", len(b)-start, size)
	}
	return b, nil
}

// putFrameHeader writes the header of a frame whose records (count of
// them) occupy buf[frameHeadroom:], right-aligned in buf[:frameHeadroom],
// and returns the offset where the frame starts.
func putFrameHeader(buf []byte, count int) int {
	var cnt, blen [binary.MaxVarintLen64]byte
	nc := binary.PutUvarint(cnt[:], uint64(count))
	body := uint64(len(buf) - frameHeadroom + nc)
	nb := binary.PutUvarint(blen[:], body)
	start := frameHeadroom - nc - nb
	copy(buf[start:], blen[:nb])
	copy(buf[start+nb:], cnt[:nc])
	return start
}

// encodeFrame returns msgs as one frame (used by tests and fuzzing; the
// peer writer builds frames in place).
func encodeFrame(msgs []multiraft.Message) ([]byte, error) {
	buf := make([]byte, frameHeadroom)
	var err error
	for _, m := range msgs {
		if buf, err = appendRecord(buf, m.Group, m.Msg); err != nil {
			return nil, err
		}
	}
	start := putFrameHeader(buf, len(msgs))
	return buf[start:], nil
}

// readFrame reads one frame from r and decodes it. buf is scratch space
// it may reuse; it returns the (possibly grown) scratch. io.EOF means the
// stream ended cleanly between frames.
func readFrame(r *bufio.Reader, buf []byte) ([]multiraft.Message, []byte, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		if err == io.EOF {
			return nil, buf, io.EOF
		}
		return nil, buf, fmt.Errorf("transport: read frame length: %w", err)
	}
	if n > MaxFrameSize {
		return nil, buf, fmt.Errorf("%w: body of %d bytes (max %d)", ErrFrameTooLarge, n, MaxFrameSize)
	}
	buf, err = readN(r, buf, int(n))
	if err != nil {
		return nil, buf, fmt.Errorf("transport: read frame body: %w", err)
	}
	msgs, err := decodeBody(buf)
	return msgs, buf, err
}

// readN reads exactly n bytes into buf[:n], growing buf as the bytes
// arrive rather than trusting n up front.
func readN(r io.Reader, buf []byte, n int) ([]byte, error) {
	buf = buf[:0]
	for len(buf) < n {
		want := min(n, len(buf)+readStep)
		if cap(buf) < want {
			// Grow geometrically, never past n.
			nb := make([]byte, len(buf), min(n, max(want, 2*cap(buf))))
			copy(nb, buf)
			buf = nb
		}
		k, err := io.ReadFull(r, buf[len(buf):want])
		buf = buf[:len(buf)+k]
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return buf, err
		}
	}
	return buf, nil
}

// decodeBody parses a frame body: uvarint(count), then count records.
// Every length is checked against what remains before anything is
// allocated, and trailing bytes are an error.
func decodeBody(b []byte) ([]multiraft.Message, error) {
	count, k := binary.Uvarint(b)
	if k <= 0 {
		return nil, fmt.Errorf("%w: bad message count", ErrCorruptFrame)
	}
	b = b[k:]
	// A record is at least two bytes (group and length prefixes).
	if count > uint64(len(b))/2 {
		return nil, fmt.Errorf("%w: count %d exceeds what %d bytes can hold", ErrCorruptFrame, count, len(b))
	}
	msgs := make([]multiraft.Message, 0, count)
	for i := uint64(0); i < count; i++ {
		group, k := binary.Uvarint(b)
		if k <= 0 {
			return nil, fmt.Errorf("%w: message %d: bad group", ErrCorruptFrame, i)
		}
		b = b[k:]
		size, k := binary.Uvarint(b)
		if k <= 0 {
			return nil, fmt.Errorf("%w: message %d: bad length", ErrCorruptFrame, i)
		}
		b = b[k:]
		if size > uint64(len(b)) {
			return nil, fmt.Errorf("%w: message %d: length %d exceeds the %d bytes left", ErrCorruptFrame, i, size, len(b))
		}
		m := &pb.Message{}
		if err := proto.Unmarshal(b[:size], m); err != nil {
			return nil, fmt.Errorf("%w: message %d: %w", ErrCorruptFrame, i, err)
		}
		b = b[size:]
		msgs = append(msgs, multiraft.Message{Group: group, Msg: m})
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrCorruptFrame, len(b))
	}
	return msgs, nil
}
