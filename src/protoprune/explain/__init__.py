"""Explanations of ProtoPNet decisions: nearest patches, local and global analysis, quality."""
