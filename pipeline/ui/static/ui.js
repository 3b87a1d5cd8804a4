// Search page: changing a filter submits the form (through htmx when it is installed, else as
// a plain GET); the results region is announced by aria-live.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("search-form");
  if (!form) return;
  for (const select of form.querySelectorAll("select.autosubmit")) {
    select.addEventListener("change", () => form.requestSubmit());
  }
});
