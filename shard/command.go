package shard

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
)

// ErrBadCommand is returned for a Raft entry that does not decode.
var ErrBadCommand = errors.New("shard: bad command")

// Command operations.
const (
	opPut    uint8 = 1
	opDelete uint8 = 2
	// opNoop changes nothing. Nothing proposes it now (etcd raft's own empty
	// entry at each new term does its job); it stays part of the command
	// format, which the FSM decodes.
	opNoop uint8 = 3
	// opBatch applies its Ops, single puts and deletes, atomically.
	opBatch uint8 = 4
	// opTrimFeed deletes the shard's change-feed records through index
	// Version (retention; see feed.go).
	opTrimFeed uint8 = 5
)

// Command preconditions.
const (
	condNone        uint8 = 0
	condIfMatch     uint8 = 1
	condIfNoneMatch uint8 = 2
)

// command is one replicated write, msgpack-encoded as the array
//
//	[Op, Key, Value, Cond, Version, Space, Ops, Depth]
//
// in which the trailing Space, Ops and Depth are left out while they are
// zero (Ops as msgpack nil when only Depth follows): a single UserSpace
// write or a no-op encodes exactly as the five-element array of the
// versions before spaces and batches. A decoder accepts five to eight
// elements; only a top-level command carries Depth. Nodes of a release
// that decodes fewer elements refuse a longer command, so every node of a
// cluster must run the same release (docs/operations.md, Upgrading). New
// fields go at the end.
type command struct {
	Op      uint8
	Key     string
	Value   []byte
	Cond    uint8
	Version uint64    // for condIfMatch
	Space   uint8     // the Space of a put or delete
	Ops     []command // opBatch: its puts and deletes
	Depth   uint8     // trigger depth of the writer (WithTriggerDepth); top-level commands only
}

// Array lengths of an encoded command.
const (
	commandLegacyLen = 5 // without Space and Ops
	commandSpaceLen  = 6 // without Ops
	commandOpsLen    = 7 // without Depth
	commandFullLen   = 8
)

var _ msgpack.CustomEncoder = command{}

func newCommand(op uint8, key string, value []byte, c Cond) command {
	cmd := command{Op: op, Key: key, Value: value}
	switch {
	case c.IfMatch != nil:
		cmd.Cond, cmd.Version = condIfMatch, *c.IfMatch
	case c.IfNoneMatch:
		cmd.Cond = condIfNoneMatch
	}
	return cmd
}

// EncodeMsgpack writes c as the array described at command.
func (c command) EncodeMsgpack(enc *msgpack.Encoder) error {
	n := commandLegacyLen
	switch {
	case c.Depth != 0:
		n = commandFullLen
	case c.Ops != nil:
		n = commandOpsLen
	case c.Space != 0:
		n = commandSpaceLen
	}
	// The fixed-width integer forms are what msgpack's struct encoding
	// wrote for these fields.
	err := errors.Join(enc.EncodeArrayLen(n), enc.EncodeUint8(c.Op), enc.EncodeString(c.Key),
		enc.EncodeBytes(c.Value), enc.EncodeUint8(c.Cond), enc.EncodeUint64(c.Version))
	if err != nil || n == commandLegacyLen {
		return err
	}
	if err := enc.EncodeUint8(c.Space); err != nil || n == commandSpaceLen {
		return err
	}
	if c.Ops == nil {
		if err := enc.EncodeNil(); err != nil {
			return err
		}
	} else if err := enc.EncodeArrayLen(len(c.Ops)); err != nil {
		return err
	}
	for _, op := range c.Ops {
		if err := op.EncodeMsgpack(enc); err != nil {
			return err
		}
	}
	if n == commandOpsLen {
		return nil
	}
	return enc.EncodeUint8(c.Depth)
}

// commandDecoder reads commands from one Raft entry. Every length a
// command claims is checked against the bytes left before anything is
// allocated, so a forged length cannot make a replica allocate gigabytes.
type commandDecoder struct {
	r   *bytes.Reader
	dec *msgpack.Decoder
}

// decode reads the array described at command into c. It checks the shape
// only (decodeCommand validates the contents); nested ops may not have ops
// of their own.
func (d commandDecoder) decode(c *command, nested bool) error {
	n, err := d.dec.DecodeArrayLen()
	if err != nil {
		return err
	}
	if n < commandLegacyLen || n > commandFullLen {
		return fmt.Errorf("command is an array of %d elements, want %d to %d", n, commandLegacyLen, commandFullLen)
	}
	*c = command{}
	if c.Op, err = d.dec.DecodeUint8(); err != nil {
		return err
	}
	key, err := d.bytes()
	if err != nil {
		return err
	}
	c.Key = string(key)
	if c.Value, err = d.bytes(); err != nil {
		return err
	}
	if c.Cond, err = d.dec.DecodeUint8(); err != nil {
		return err
	}
	if c.Version, err = d.dec.DecodeUint64(); err != nil {
		return err
	}
	if n == commandLegacyLen {
		return nil
	}
	if c.Space, err = d.dec.DecodeUint8(); err != nil {
		return err
	}
	if n == commandSpaceLen {
		return nil
	}
	k, err := d.dec.DecodeArrayLen()
	switch {
	case err != nil:
		return err
	case k < 0: // nil: no ops
		return d.depth(c, n, nested)
	case nested && k > 0:
		return errors.New("nested batch")
	case k > MaxBatchOps:
		return fmt.Errorf("batch of %d ops, the limit is %d", k, MaxBatchOps)
	case k > d.r.Len():
		return fmt.Errorf("batch of %d ops in %d bytes", k, d.r.Len())
	}
	c.Ops = make([]command, k)
	for i := range c.Ops {
		if err := d.decode(&c.Ops[i], true); err != nil {
			return fmt.Errorf("op %d: %w", i, err)
		}
	}
	return d.depth(c, n, nested)
}

// depth reads the Depth element of an n-element command.
func (d commandDecoder) depth(c *command, n int, nested bool) error {
	if n < commandFullLen {
		return nil
	}
	if nested {
		return errors.New("depth on a nested op")
	}
	var err error
	c.Depth, err = d.dec.DecodeUint8()
	return err
}

// bytes reads a string or binary element (nil for a msgpack nil).
func (d commandDecoder) bytes() ([]byte, error) {
	n, err := d.dec.DecodeBytesLen()
	switch {
	case err != nil:
		return nil, err
	case n < 0:
		return nil, nil
	case n > d.r.Len():
		return nil, fmt.Errorf("element of %d bytes, %d left", n, d.r.Len())
	}
	b := make([]byte, n)
	if err := d.dec.ReadFull(b); err != nil {
		return nil, err
	}
	return b, nil
}

func encodeCommand(c command) ([]byte, error) {
	b, err := msgpack.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("shard: encode command: %w", err)
	}
	return b, nil
}

// decodeCommand parses and validates a Raft entry's payload.
func decodeCommand(b []byte) (command, error) {
	r := bytes.NewReader(b)
	dec := msgpack.GetDecoder()
	defer msgpack.PutDecoder(dec)
	// A bytes.Reader is an io.ByteScanner: the decoder reads it directly,
	// without buffering ahead, so r.Len() is what is left to decode.
	dec.Reset(r)
	var c command
	if err := (commandDecoder{r: r, dec: dec}).decode(&c, false); err != nil {
		return command{}, fmt.Errorf("%w: %v", ErrBadCommand, err)
	}
	switch c.Op {
	case opPut, opDelete:
		if err := validateWrite(c); err != nil {
			return command{}, fmt.Errorf("%w: %v", ErrBadCommand, err)
		}
	case opNoop:
		if c.Key != "" || len(c.Value) != 0 || c.Cond != condNone || c.Space != 0 || len(c.Ops) != 0 {
			return command{}, fmt.Errorf("%w: no-op with arguments", ErrBadCommand)
		}
	case opBatch:
		if err := validateBatch(c); err != nil {
			return command{}, fmt.Errorf("%w: %v", ErrBadCommand, err)
		}
	case opTrimFeed:
		if c.Key != "" || len(c.Value) != 0 || c.Cond != condNone || c.Space != 0 || len(c.Ops) != 0 {
			return command{}, fmt.Errorf("%w: feed trim with arguments", ErrBadCommand)
		}
	default:
		return command{}, fmt.Errorf("%w: unknown op %d", ErrBadCommand, c.Op)
	}
	return c, nil
}

// validateWrite checks a single put or delete.
func validateWrite(c command) error {
	if c.Cond > condIfNoneMatch {
		return fmt.Errorf("unknown condition %d", c.Cond)
	}
	if _, ok := Space(c.Space).kvSpace(); !ok {
		return fmt.Errorf("unknown space %d", c.Space)
	}
	if len(c.Ops) != 0 {
		return fmt.Errorf("op %d with nested ops", c.Op)
	}
	return validateStoredKey(c.Key)
}

// validateBatch checks a batch: no arguments of its own, 1..MaxBatchOps
// valid puts and deletes, no (space, key) twice.
func validateBatch(c command) error {
	if c.Key != "" || len(c.Value) != 0 || c.Cond != condNone || c.Version != 0 || c.Space != 0 {
		return errors.New("batch with arguments of its own")
	}
	if len(c.Ops) == 0 || len(c.Ops) > MaxBatchOps {
		return fmt.Errorf("batch of %d ops, want 1 to %d", len(c.Ops), MaxBatchOps)
	}
	seen := make(map[spaceKey]struct{}, len(c.Ops))
	for i, op := range c.Ops {
		if op.Op != opPut && op.Op != opDelete {
			return fmt.Errorf("op %d: op %d in a batch", i, op.Op)
		}
		if err := validateWrite(op); err != nil {
			return fmt.Errorf("op %d: %w", i, err)
		}
		k := spaceKey{Space(op.Space), op.Key}
		if _, dup := seen[k]; dup {
			return fmt.Errorf("op %d: %s key %q appears twice", i, k.sp, k.key)
		}
		seen[k] = struct{}{}
	}
	return nil
}

// spaceKey is a key within its space.
type spaceKey struct {
	sp  Space
	key string
}
