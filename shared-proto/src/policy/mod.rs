//! Policy language (placeholder until the helper lands it).
