// Light and dark themes: the system's choice until the toggle is used, then the toggle's, remembered.

const KEY = "h2ochat-theme";
const system = window.matchMedia("(prefers-color-scheme: dark)");

function stored() {
  try {
    return localStorage.getItem(KEY);
  } catch {
    return null; // storage disabled: follow the system
  }
}

// `button`: the toggle; null on a page without one (a shared conversation's), which only follows the choice.
export function initTheme(button) {
  const apply = () => {
    const choice = stored();
    const dark = choice ? choice === "dark" : system.matches;
    if (choice) document.documentElement.dataset.theme = choice;
    else delete document.documentElement.dataset.theme;
    button?.setAttribute("aria-pressed", String(dark));
  };
  button?.addEventListener("click", () => {
    const dark = button.getAttribute("aria-pressed") !== "true";
    try {
      localStorage.setItem(KEY, dark ? "dark" : "light");
    } catch {
      // not remembered, but applied below for this page
    }
    document.documentElement.dataset.theme = dark ? "dark" : "light";
    button.setAttribute("aria-pressed", String(dark));
  });
  system.addEventListener("change", apply);
  apply();
}
