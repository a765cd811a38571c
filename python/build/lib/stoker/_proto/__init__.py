"""Generated from proto/stoker/v1/stoker.proto by scripts/gen_proto.py; do not edit."""
