"""The AI model package (phantoms, preprocessing, the torch network); it imports no Django."""
