"""The request pipeline's stages (``app.pipeline``): authenticate, template, admit, account."""
