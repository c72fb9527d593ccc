// Package tolerant decodes msgpack records stored as arrays (structs with
// `msgpack:",as_array"`) whatever their length: a record written before
// a field was appended has fewer elements, one written by a newer version
// more. msgpack's own as_array decoding refuses both ("number of fields
// in array-encoded struct has changed"), which would make every stored
// record of the type unreadable after a field is added.
//
// A type adds fields only at the end and implements DecodeMsgpack with
// DecodeArray, listing its fields in order:
//
//	func (r *rec) DecodeMsgpack(d *msgpack.Decoder) error {
//		return tolerant.DecodeArray(d, &r.A, &r.B, &r.Added)
//	}
//
// Encoding keeps the as_array tag.
package tolerant
