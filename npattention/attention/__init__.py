"""Attention: score -> align -> context, and the modules built from them."""
