"""The request pipeline's stages (``app.pipeline``): authenticate, admit, account."""
